"""A synthesized image's recipe: everything needed to make it again, as JSON beside the PNG.

Written by `cnnviewer synthesize` and the Synthesis panel's Save; `cnnviewer synthesize --from`
reads it back and, on the same CPU, makes the same image bit for bit (every run has its own seeded
torch.Generator and no step depends on timing).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.errors import CnnViewerError
from cnnviewer.engine.synthesis.recipe_check import SETTINGS



def target_of(recipe: dict) -> Target | None:
    wanted = recipe.get("target")
    if not wanted:
        return None      # style transfer has no unit
    return Target(class_index=wanted.get("class_index"), layer=wanted.get("layer"), channel=wanted.get("channel"),
                  neuron=tuple(wanted["neuron"]) if wanted.get("neuron") else None)


def settings_of(method: str, values: dict):
    kind = SETTINGS[method]
    return kind(**{f.name: values[f.name] for f in fields(kind) if f.name in values})


def make_engine(method: str, model: LoadedModel, target: Target | None, settings, image: np.ndarray | None = None,
                style: np.ndarray | None = None):
    """The synthesis run `method` describes (image: DeepDream's start or style transfer's content;
    style: the style image; both (H, W, 3) uint8)."""
    from cnnviewer.engine.synthesis.deepdream import DeepDream
    from cnnviewer.engine.synthesis.fourier import FourierAscent
    from cnnviewer.engine.synthesis.pixels import PixelAscent
    if method == "deepdream":
        if image is None:
            raise ValueError("DeepDream starts from an image")
        return DeepDream(model, target, settings, image)
    if method == "style":
        if image is None or style is None:
            raise ValueError("style transfer needs a content image and a style image")
        from cnnviewer.engine.synthesis.style_transfer import style_transfer
        return style_transfer(model, image, style, settings)
    if method == "fourier":
        return FourierAscent(model, target, settings)
    return PixelAscent(model, target, settings)


def total_steps(engine) -> int:
    return getattr(engine, "total_steps", None) or engine.settings.steps


def _digest(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def record(method: str, target: Target | None, settings, model: LoadedModel, weights_sha256: str, engine,
           image_path: str | None = None, style_path: str | None = None) -> dict:
    """The JSON-ready recipe of a finished (or stopped) run (image: DeepDream's start or the content)."""
    from cnnviewer import __version__
    pixels = engine.pictures()[0]
    recipe = {"cnnviewer": __version__, "method": method,
              "target": None if target is None else {
                  "class_index": target.class_index, "layer": target.layer, "channel": target.channel,
                  "neuron": list(target.neuron) if target.neuron else None},
              "settings": asdict(settings), "seed": settings.seed, "steps_done": engine.step,
              # float sums split over threads: part of "the same CPU"
              "torch_threads": getattr(engine, "threads", None) or torch.get_num_threads(),
              "model": model.name, "weights": model.weights_path, "weights_label": model.weights_label,
              "weights_sha256": weights_sha256, "objective": float(engine.objective()[0]),
              "image": image_path, "image_sha256": _digest(image_path),
              "output_sha256": hashlib.sha256(pixels.tobytes()).hexdigest()}
    if method == "style":
        recipe.update(style_image=style_path, style_image_sha256=_digest(style_path),
                      losses=asdict(engine.measure()) if hasattr(engine, "measure") else None)
    return recipe


def save(path: str | Path, pixels: np.ndarray, recipe: dict) -> Path:
    """`path` (PNG) and the recipe beside it (same name, .json). Returns the JSON's path.

    Both are written to temporary files first and renamed only when both are complete: a full disk
    leaves the earlier pair as it was and no partial file behind (one-line CnnViewerError)."""
    from PIL import Image

    from cnnviewer.engine.media.files import atomic_output
    path = Path(path)
    target = path.with_suffix(".json")
    try:
        with atomic_output(path) as picture, atomic_output(target) as text:
            Image.fromarray(pixels).save(picture, format="PNG")
            text.write_text(json.dumps(recipe, indent=1), encoding="utf-8")
    except OSError as error:    # the temporary file itself could not be made
        raise CnnViewerError(f"{path}: could not be written ({error.strerror or error})") from None
    return target
