"""A torchvision transform read as the app's Preprocess (job thread: imports the engine's model types).

Read by class name and attributes, so torchvision v1 and v2 transforms and a weights' preset all
map without importing torchvision here; anything the app's resize-crop-normalise cannot reproduce
is refused by name rather than silently approximated.
"""

from __future__ import annotations

from typing import Any

from cnnviewer.engine.errors import ModelError
from cnnviewer.engine.models.handle import IMAGENET_MEAN, IMAGENET_STD, Preprocess

# Steps that turn a PIL image into a float tensor without changing what the model sees.
NEUTRAL_STEPS = frozenset({"ToTensor", "PILToTensor", "ConvertImageDtype", "ToImage", "ToDtype",
                           "ToImageTensor", "ToPureTensor"})
PIL_FILTERS = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "lanczos", 4: "box", 5: "hamming"}
MAPPABLE = "Resize(N), CenterCrop(N), ToTensor / PILToTensor / ConvertImageDtype and Normalize"


def _size(step: Any, field: str) -> int:
    """An int size, or a one-element / square pair; anything else cannot be mapped."""
    size = getattr(step, field, None)
    if isinstance(size, int):
        return size
    if isinstance(size, (list, tuple)) and len(size) == 1:
        return int(size[0])
    if field == "size" and isinstance(size, (list, tuple)) and len(size) == 2 and type(step).__name__ == "CenterCrop" \
            and size[0] == size[1]:
        return int(size[0])
    raise ModelError(f"preprocess step {step!r} cannot be mapped: cnnviewer resizes the shorter side to N "
                     f"and crops an N x N centre (use {MAPPABLE})")


def _interpolation(step: Any) -> str:
    mode = getattr(step, "interpolation", None)
    if mode is None:
        return "bilinear"
    if isinstance(mode, int):
        return PIL_FILTERS.get(mode, "bilinear")
    return str(getattr(mode, "value", mode))


def _three(values: Any, step: Any) -> tuple[float, float, float]:
    numbers = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3:
        raise ModelError(f"preprocess step {step!r} cannot be mapped: cnnviewer normalises 1 or 3 channels")
    return numbers   # type: ignore[return-value]


def to_preprocess(transform: Any) -> Preprocess:
    """A torchvision transform as the app's Preprocess (resize, crop, mean, std, interpolation).

    Accepts Compose (v1 or v2) of Resize(N), CenterCrop(N), ToTensor / PILToTensor / ConvertImageDtype
    (v2: ToImage / ToDtype) and Normalize, or a weights' ImageClassification preset.

    Raises:
        ModelError: one line naming the step that cannot be mapped.
    """
    kind = type(transform).__name__
    if kind == "ImageClassification":   # e.g. MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
        return Preprocess(resize_size=_size(transform, "resize_size"), crop_size=_size(transform, "crop_size"),
                          mean=_three(transform.mean, transform), std=_three(transform.std, transform),
                          interpolation=_interpolation(transform))
    steps = getattr(transform, "transforms", None) if kind == "Compose" else [transform]
    if not isinstance(steps, (list, tuple)):
        raise ModelError(f"preprocess {transform!r} cannot be mapped (use a torchvision Compose of {MAPPABLE})")
    resize = crop = None
    mean, std, interpolation = IMAGENET_MEAN, IMAGENET_STD, "bilinear"
    normalised = raw = False
    for step in steps:
        name = type(step).__name__
        if name == "ToDtype" and not normalised and not getattr(step, "scale", False):
            raw = True   # v2.ToDtype(float32) keeps 0..255 values (scale=False is its default)
        if name == "Resize" and resize is None and crop is None:
            resize, interpolation = _size(step, "size"), _interpolation(step)
        elif name == "CenterCrop" and crop is None:
            crop = _size(step, "size")
        elif name == "Normalize" and not normalised:
            mean, std, normalised = _three(step.mean, step), _three(step.std, step), True
        elif name not in NEUTRAL_STEPS:
            raise ModelError(f"preprocess step {step!r} cannot be mapped onto cnnviewer's resize, crop and "
                             f"normalise (use {MAPPABLE})")
    if resize is None:
        raise ModelError(f"preprocess has no Resize step: cnnviewer resizes every image first (add Resize(N); use {MAPPABLE})")
    if not normalised:   # ToTensor alone: the model sees [0, 1] values
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if raw:   # (255 y - m) / s == (y - m / 255) / (s / 255) for the app's y in [0, 1]
        mean, std = tuple(m / 255.0 for m in mean), tuple(s / 255.0 for s in std)
    return Preprocess(resize_size=resize, crop_size=crop if crop is not None else resize, mean=mean, std=std,
                      interpolation=interpolation)
