"""A class map drawn over its image, and what each class covers: numpy only, so the window's thread
can redraw it when the opacity or the shown classes change."""

from __future__ import annotations

import colorsys

import numpy as np


def palette(count: int) -> np.ndarray:
    """(count, 3) uint8 distinct colours, the same for the same class in every run (golden-ratio
    hues, alternating lightness so neighbours in index differ)."""
    colours = [colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95 if i % 2 else 0.75)
               for i in range(count)]
    return (np.asarray(colours) * 255).round().astype(np.uint8).reshape(count, 3)


def overlay(pixels: np.ndarray, labels: np.ndarray, colours: np.ndarray, opacity: float = 0.5,
            shown: set[int] | None = None) -> np.ndarray:
    """`pixels` (H, W, 3) uint8 with each pixel's class colour blended in at `opacity`; `labels` is
    (H, W) at the same size. `shown`: only these classes are coloured (a legend click)."""
    colour = colours[labels].astype(np.float32)
    mask = np.ones(labels.shape, bool) if shown is None else np.isin(labels, list(shown))
    alpha = np.where(mask, float(np.clip(opacity, 0.0, 1.0)), 0.0)[..., None]
    return (pixels.astype(np.float32) * (1 - alpha) + colour * alpha).round().astype(np.uint8)


def class_table(labels: np.ndarray, confidence: np.ndarray) -> list[dict]:
    """Per class present: its pixel count and the mean probability of that class over its pixels,
    largest area first. `confidence`: (H, W) the winning class's probability at each pixel."""
    classes, inverse, counts = np.unique(labels.ravel(), return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=confidence.ravel().astype(np.float64), minlength=len(classes))
    order = np.argsort(-counts, kind="stable")
    return [{"class": int(classes[i]), "pixels": int(counts[i]), "mean_probability": float(sums[i] / counts[i])}
            for i in order]


def crop_extent(height: int, width: int, resize_size: int, crop_size: int) -> tuple[float, float, float, float]:
    """Where the model's input lies in the image, as fractions (y0, x0, y1, x1): the short side
    resized to `resize_size`, then the centre `crop_size` square (inference.prepare_input). A crop
    larger than the resized image reaches past its edges (torchvision pads it): fractions < 0 or > 1."""
    scale = resize_size / min(height, width)
    resized_h, resized_w = height * scale, width * scale
    top, left = (resized_h - crop_size) / 2, (resized_w - crop_size) / 2
    return top / resized_h, left / resized_w, (top + crop_size) / resized_h, (left + crop_size) / resized_w
