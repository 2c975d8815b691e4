"""Colormaps as lookup tables, and the one blend and signed-value scale every picture uses."""

from __future__ import annotations

import functools

import numpy as np

# Anchor colours of perceptual colormaps (sampled from matplotlib's definitions);
# 256-entry tables are interpolated from them once.
_ANCHORS = {
    "viridis": [(68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
                (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37)],
    "magma": [(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122),
              (229, 80, 100), (251, 135, 97), (254, 194, 135), (252, 253, 191)],
    "inferno": [(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
                (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164)],
    "gray": [(0, 0, 0), (255, 255, 255)],
    "coolwarm": [(59, 76, 192), (124, 159, 249), (192, 212, 245), (242, 203, 183),
                 (238, 132, 104), (180, 4, 38)],
}
COLORMAPS = tuple(_ANCHORS)


@functools.cache
def colormap_table(name: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table for one of COLORMAPS (computed once, read-only)."""
    anchors = np.array(_ANCHORS[name], dtype=np.float64)
    positions = np.linspace(0.0, 1.0, len(anchors))
    samples = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(samples, positions, anchors[:, c]) for c in range(3)], axis=1)
    table = np.round(table).astype(np.uint8)
    table.setflags(write=False)
    return table


def blend(base: np.ndarray, colour: np.ndarray, weight: np.ndarray | float) -> np.ndarray:
    """base × (1 − weight) + colour × weight, as C-contiguous uint8 (weight: scalar or (H, W, 1))."""
    mixed = base.astype(np.float32) * (1.0 - weight) + colour.astype(np.float32) * weight
    return np.ascontiguousarray(np.clip(mixed, 0, 255).astype(np.uint8))


def signed_to_uint8(values: np.ndarray, limit: float | None = None) -> np.ndarray:
    """Signed values to 0..255 with zero at mid-gray, ±limit (default: the largest |value|) at the ends."""
    limit = limit or float(np.abs(values).max()) or 1.0
    return np.clip((values / (2 * limit) + 0.5) * 255, 0, 255).round().astype(np.uint8)
