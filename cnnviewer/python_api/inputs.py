"""Images a Python caller hands `show()`: a path, PIL image, numpy array or tensor.

Imports no torch: a tensor is converted with its own methods, on the job thread
(`to_input_image`); `image_problem` checks only a shape, so the caller's thread can refuse a
wrong one before any window opens.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnviewer.engine.errors import ImageError
from cnnviewer.engine.media.images import MAX_PIXELS, InputImage, from_array, from_pil, load_image

SOURCE = "image from Python"
FROM_PYTHON = " (from Python)"   # ends the name of a model handed over by show(): the title bar says so


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def image_problem(shape: Sequence[int], layout: str = "HWC") -> str | None:
    """Why an array of this shape is not an image, or None. layout 'CHW' is a tensor's
    (channels first allowed); 'HWC' a numpy array's."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4 and shape[0] == 1 and layout == "CHW":
        shape = shape[1:]
    picture = (len(shape) == 2 and min(shape) > 0) or (len(shape) == 3 and min(shape) > 0 and (
        shape[-1] in (1, 3, 4) or (layout == "CHW" and shape[0] in (1, 3, 4))))
    if picture:   # the image files' own limit: converting more would take gigabytes of the caller's memory
        channels_first = len(shape) == 3 and layout == "CHW" and shape[-1] not in (1, 3, 4)
        height, width = shape[1:3] if channels_first else shape[:2]
        if height * width > MAX_PIXELS:
            return f"image of {height} x {width} pixels is too large to show (over {MAX_PIXELS:,} pixels)"
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


CHUNK_VALUES = 1 << 20   # values converted at a time: the temporaries stay a few MB, whatever the image


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    """[0, 1] floats scaled by 255, a band of rows at a time (a whole-image `round(array * 255)` took
    2.3 GB over a 100 Mpx float32 input)."""
    out = np.empty(array.shape, np.uint8)
    rows = max(1, CHUNK_VALUES // max(1, array[0].size))
    for start in range(0, array.shape[0], rows):
        band = array[start:start + rows]
        if not np.isfinite(band).all() or band.min() < 0 or band.max() > 1:   # the error path may scan it all
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN image has no range
                low, high = np.nanmin(array), np.nanmax(array)
            raise ImageError(f"float image values must lie in [0, 1] (got {low:.3g} to {high:.3g}"
                             f"{'' if np.isfinite(array).all() else ', and NaN or inf'})")
        out[start:start + rows] = np.rint(band * 255.0)
    return out


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 as is; floats must lie in [0, 1] (scaled by 255); other integers in 0..255."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return _float_to_uint8(array)
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
