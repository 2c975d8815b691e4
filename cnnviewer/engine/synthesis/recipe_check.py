"""Check a recipe read back from JSON before anything runs: a recipe is a file people share.

Every field gets the bounds the command line gives its flag (`cnnviewer synthesize --steps` takes
1..100000, so a recipe's steps do too), the right type (a list where settings belong is refused, not
replaced by defaults), and a finite value where a float belongs (a NaN learning rate wrote a NaN
image). The error names the field. Torch-free: bounds only; the model-dependent ones (a class or a
channel the model has) are checked where the model is (`objective.score`).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields

from cnnviewer.engine.errors import CnnViewerError
from cnnviewer.engine.synthesis.settings import (
    STYLE_BACKBONES,
    DreamSettings,
    FourierSettings,
    PixelSettings,
    StyleSettings,
)

METHODS = ("ascent", "fourier", "facets", "deepdream", "style")
SETTINGS = {"ascent": PixelSettings, "facets": PixelSettings, "fourier": FourierSettings, "deepdream": DreamSettings,
            "style": StyleSettings}

# The command line's bounds, shared with its flags.
STEPS = (1, 100000)
SIZE = (32, 1024)
SEED = (0, 2**32 - 1)          # numpy's and scikit-learn's seeds stop there
FACET_COUNT = (1, 10)
TOP = (2, 10000)
PRESET = (1, 4)
THREADS = (1, 256)             # torch.set_num_threads(100000) ends the process with SIGSEGV

# Settings fields: (low, high) for numbers, a tuple of names for choices. A bound of None: open.
_INTS = {"steps": STEPS, "size": SIZE, "seed": SEED, "blur_every": (0, 100000), "jitter": (0, 512),
         "octaves": (1, 10)}
_FLOATS = {"lr": (1e-12, 1e12), "max_lr": (1e-12, 1e12), "desired_progress": (1e-12, 1e12), "decay": (0.0, 0.99),
           "blur_radius": (0.0, 100.0), "small_norm_percentile": (0.0, 100.0),
           "small_benefit_percentile": (0.0, 100.0), "tv_weight": (0.0, 1e12), "spectrum_sd": (1e-9, 10.0),
           "decay_power": (0.0, 10.0), "octave_scale": (1.01, 4.0), "step_size": (1e-9, 1e6),
           "content_weight": (0.0, 1e15), "style_weight": (0.0, 1e15), "lbfgs_lr": (1e-12, 1e3),
           "adam_lr": (1e-12, 1e3)}
_CHOICES = {"lr_policy": ("constant", "progress"), "optimizer": ("lbfgs", "adam"), "init": ("content", "noise"),
            "backbone": STYLE_BACKBONES}
_TEXT = ("content_layer", "style_layers")
_MAX_TEXT = 4096


class RecipeError(CnnViewerError):
    """A recipe field is missing, of the wrong type or out of bounds: reported in one line."""


def whole(field: str, value: object, bounds: tuple[int, int]) -> int:
    """`value` as an int within `bounds` (bool is no int here: JSON true is not a step count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecipeError(f"{field} must be a whole number, not {_shown(value)}")
    if not bounds[0] <= value <= bounds[1]:
        raise RecipeError(f"{field} {value} is out of range: use {bounds[0]}..{bounds[1]}")
    return value


def _real(field: str, value: object, bounds: tuple[float, float]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeError(f"{field} must be a number, not {_shown(value)}")
    if not math.isfinite(value) or not bounds[0] <= value <= bounds[1]:
        raise RecipeError(f"{field} {value} is out of range: use a finite number in {bounds[0]:g}..{bounds[1]:g}")
    return float(value)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def check_settings(method: str, values: object) -> dict:
    """The method's settings fields of `values`, each checked; unknown keys are left out (a newer
    version's field), missing ones take the method's defaults."""
    if not isinstance(values, dict):
        raise RecipeError(f"settings must be an object of the method's fields, not {_shown(values)}")
    checked = {}
    for spec in fields(SETTINGS[method]):
        name = spec.name
        if name not in values:
            continue
        value, field = values[name], f"settings.{name}"
        if name in _INTS:
            checked[name] = whole(field, value, _INTS[name])
        elif name in _FLOATS:
            checked[name] = _real(field, value, _FLOATS[name])
        elif name in _CHOICES:
            if value not in _CHOICES[name]:
                raise RecipeError(f"{field} must be one of {', '.join(_CHOICES[name])}, not {_shown(value)}")
            checked[name] = value
        elif name in _TEXT:
            if not isinstance(value, str) or len(value) > _MAX_TEXT:
                raise RecipeError(f"{field} must be text (layer names), not {_shown(value)}")
            checked[name] = value
        elif spec.default is not MISSING and isinstance(spec.default, bool):
            if not isinstance(value, bool):
                raise RecipeError(f"{field} must be true or false, not {_shown(value)}")
            checked[name] = value
        else:    # a field added to the settings without bounds here: refuse rather than run unchecked
            raise RecipeError(f"{field} is not checked by this version of cnnviewer")
    return checked


def _target(method: str, value: object) -> dict | None:
    if method == "style":
        return None
    if not isinstance(value, dict):
        raise RecipeError(f"target must be an object (class_index, or layer with channel), not {_shown(value)}")
    class_index, layer = value.get("class_index"), value.get("layer")
    channel, neuron = value.get("channel"), value.get("neuron")
    if class_index is not None:
        whole("target.class_index", class_index, (0, 10**9))
    if layer is not None and (not isinstance(layer, str) or not layer or len(layer) > _MAX_TEXT):
        raise RecipeError(f"target.layer must be a layer's name, not {_shown(layer)}")
    if channel is not None:
        whole("target.channel", channel, (0, 10**9))
    if neuron is not None:
        if not isinstance(neuron, list) or len(neuron) != 2:
            raise RecipeError(f"target.neuron must be [y, x], not {_shown(neuron)}")
        neuron = [whole("target.neuron", v, (0, 10**6)) for v in neuron]
    if (class_index is None) == (layer is None):
        raise RecipeError("target needs a class_index or a layer, not both or neither")
    if layer is not None and channel is None and (method != "deepdream" or neuron is not None):
        raise RecipeError("target.layer needs a channel (all of a layer is DeepDream's objective)")
    return {"class_index": class_index, "layer": layer, "channel": channel, "neuron": neuron}


def _path(recipe: dict, key: str, needed: bool, method: str) -> str | None:
    value = recipe.get(key)
    if value is None and needed:
        raise RecipeError(f"{key} is missing: {method} needs it")
    if value is not None and (not isinstance(value, str) or not value or "\0" in value):
        raise RecipeError(f"{key} must be a file or folder name, not {_shown(value)}")
    return value


def check_recipe(recipe: object) -> dict:
    """The recipe with every field the replay uses checked; raises RecipeError naming the field."""
    if not isinstance(recipe, dict):
        raise RecipeError(f"a recipe is a JSON object, not {_shown(recipe)}")
    method = recipe.get("method")
    if method not in METHODS:
        raise RecipeError(f"method must be one of {', '.join(METHODS)}, not {_shown(method)}")
    checked = dict(recipe, method=method, target=_target(method, recipe.get("target")))
    if recipe.get("settings") is not None:
        checked["settings"] = check_settings(method, recipe["settings"])
    for key, bounds in (("steps", STEPS), ("size", SIZE), ("preset", PRESET), ("facets", FACET_COUNT), ("top", TOP),
                        ("torch_threads", THREADS)):
        if recipe.get(key) is not None:
            checked[key] = whole(key, recipe[key], bounds)
    checked["seed"] = whole("seed", recipe.get("seed", 0), SEED)
    for key in ("model", "weights"):
        if recipe.get(key) is not None and (not isinstance(recipe[key], str) or not recipe[key]):
            raise RecipeError(f"{key} must be a name or a file, not {_shown(recipe[key])}")
    checked["image"] = _path(recipe, "image", method in ("deepdream", "style"), method)
    checked["style_image"] = _path(recipe, "style_image", method == "style", method)
    checked["folder"] = _path(recipe, "folder", method == "facets", method)
    if method == "style" and recipe.get("style") is not None:
        checked["style"] = check_settings("style", recipe["style"])
    return checked
