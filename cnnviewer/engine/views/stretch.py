"""Display contrast stretch for synthesized pictures (numpy only).

Pixel-space ascent leaves its image close to the mean colour (decay pulls it there), so shown as
saved it was a near-blank grey square. The Deep Visualization Toolbox normalises its images for
display (min..max to 0..1); this does the same with robust percentiles, over all three channels
together so hues are kept. Only the display is stretched: the saved PNG and recipe are the run's."""

from __future__ import annotations

import numpy as np


def stretch(picture: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """`picture` (H, W, 3) uint8 with its `low`..`high` percentiles mapped to 0..255.

    A flat picture (nothing to stretch) comes back unchanged."""
    values = np.asarray(picture, dtype=np.float32)
    bottom, top = np.percentile(values, [low, high])
    if top - bottom < 1.0:
        return np.ascontiguousarray(picture)
    scaled = (values - bottom) * (255.0 / (top - bottom))
    return np.ascontiguousarray(np.clip(scaled, 0, 255).astype(np.uint8))
