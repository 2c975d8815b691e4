"""Where a unit's maximally activating patch is in the original image: the theoretical receptive
field of the max position (in the model's input crop), mapped back through the centre crop and
the short-side resize of the preprocessing into the original image's pixels."""

from __future__ import annotations

from cnnviewer.engine.models.handle import Preprocess
from cnnviewer.engine.structure.summary import Field


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after resizing the short side to `short_side`, as torchvision computes it."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def crop_to_original(box: tuple[float, float, float, float], original: tuple[int, int],
                     preprocess: Preprocess) -> tuple[float, float, float, float]:
    """(top, left, bottom, right) in the input crop -> (x0, y0, x1, y1) in the original image.

    The box may reach beyond the image (a field on zero padding): it is returned unclipped, so a
    patch that reaches into padding is drawn padded, not stretched.
    """
    width, height = original
    resized_w, resized_h = resized_size(width, height, preprocess.resize_size)
    crop = preprocess.crop_size
    offset_y, offset_x = int(round((resized_h - crop) / 2.0)), int(round((resized_w - crop) / 2.0))
    scale_x, scale_y = width / resized_w, height / resized_h
    top, left, bottom, right = box
    return ((left + offset_x) * scale_x, (top + offset_y) * scale_y,
            (right + offset_x) * scale_x, (bottom + offset_y) * scale_y)


def patch_box(field: Field, position: tuple[int, int], original: tuple[int, int],
              preprocess: Preprocess) -> tuple[float, float, float, float] | None:
    """The original-image box of neuron `position`'s field; None when the field is the whole image."""
    if field.whole:
        return None
    return crop_to_original(field.box(*position), original, preprocess)
