"""What a Python caller hands `show()`: images of any common kind, and torchvision transforms.

Imports no torch: transforms are read by class name and attributes, and a tensor is converted
with its own methods, on the job thread (`to_input_image`); `image_problem` checks only a shape,
so the caller's thread can refuse a wrong one before any window opens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnviewer.engine.errors import ImageError, ModelError
from cnnviewer.engine.media.images import InputImage, from_array, from_pil, load_image

SOURCE = "image from Python"
FROM_PYTHON = " (from Python)"   # ends the name of a model handed over by show(): the title bar says so
# Steps that turn a PIL image into a float tensor without changing what the model sees.
NEUTRAL_STEPS = frozenset({"ToTensor", "PILToTensor", "ConvertImageDtype", "ToImage", "ToDtype",
                           "ToImageTensor", "ToPureTensor"})
PIL_FILTERS = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "lanczos", 4: "box", 5: "hamming"}
MAPPABLE = "Resize(N), CenterCrop(N), ToTensor / PILToTensor / ConvertImageDtype and Normalize"


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def image_problem(shape: Sequence[int], layout: str = "HWC") -> str | None:
    """Why an array of this shape is not an image, or None. layout 'CHW' is a tensor's
    (channels first allowed); 'HWC' a numpy array's."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4 and shape[0] == 1 and layout == "CHW":
        shape = shape[1:]
    if len(shape) == 2 and min(shape) > 0:
        return None
    if len(shape) == 3 and min(shape) > 0 and (shape[-1] in (1, 3, 4) or (layout == "CHW" and shape[0] in (1, 3, 4))):
        return None
    expected = "(H, W), (H, W, C) or (C, H, W) with C 1, 3 or 4" if layout == "CHW" else "(H, W) or (H, W, C) with C 1, 3 or 4"
    return f"image of shape {shape} is not a picture: expected {expected}"


def check_image(image: Any) -> None:
    """Refuse what is plainly not an image on the caller's thread (no torch call: a shape only).

    Raises:
        TypeError: not a kind of image; ValueError: an array of a shape no picture has (one line each).
    """
    if image is None or isinstance(image, (str, Path)) or type(image).__module__.startswith("PIL"):
        return
    shape = getattr(image, "shape", None)
    if shape is None:
        raise TypeError(f"image must be a path, a PIL image, a numpy array or a tensor, not {type(image).__name__}")
    problem = image_problem(shape, "CHW" if _is_tensor(image) else "HWC")
    if problem:
        raise ValueError(problem)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 as is; floats must lie in [0, 1] (scaled by 255); other integers in 0..255."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageError(f"float image values must lie in [0, 1] (got {array.min():.3g} to {array.max():.3g})")
        return np.round(array * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        if array.min() < 0 or array.max() > 255:
            raise ImageError("integer image values must lie in 0..255")
        return array.astype(np.uint8)
    raise ImageError(f"image of dtype {array.dtype} is not a picture")


def to_input_image(image: Any) -> InputImage:
    """Any supported image as the engine's InputImage (job thread: a tensor is read here).

    Raises:
        ImageError: one line.
    """
    if isinstance(image, (str, Path)):
        return load_image(image)
    if type(image).__module__.startswith("PIL"):
        return from_pil(image, SOURCE)
    layout = "HWC"
    if _is_tensor(image):
        image, layout = image.detach().cpu().numpy(), "CHW"   # the caller's tensor is never written
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a path, a PIL image, a numpy array or a tensor, not {type(image).__name__}")
    problem = image_problem(image.shape, layout)
    if problem:
        raise ImageError(problem)
    array = image[0] if image.ndim == 4 else image
    if array.ndim == 3 and layout == "CHW" and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return from_array(np.ascontiguousarray(_to_uint8(array)), SOURCE)


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


def to_preprocess(transform: Any):
    """A torchvision transform as the app's Preprocess (resize, crop, mean, std, interpolation).

    Accepts Compose (v1 or v2) of Resize(N), CenterCrop(N), ToTensor / PILToTensor / ConvertImageDtype
    (v2: ToImage / ToDtype) and Normalize, or a weights' ImageClassification preset.

    Raises:
        ModelError: one line naming the step that cannot be mapped.
    """
    from cnnviewer.engine.models.handle import IMAGENET_MEAN, IMAGENET_STD, Preprocess
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
    normalised = False
    for step in steps:
        name = type(step).__name__
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
    return Preprocess(resize_size=resize, crop_size=crop if crop is not None else resize, mean=mean, std=std,
                      interpolation=interpolation)
