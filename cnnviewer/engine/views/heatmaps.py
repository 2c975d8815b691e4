"""Attributions drawn as pictures: heat maps, signed maps, the gradient as RGB, overlays (numpy only)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from cnnviewer.engine.views.colormaps import blend, colormap_table

DisplayMode = Literal["heat", "signed", "rgb", "overlay"]
DISPLAY_MODES: tuple[str, ...] = ("heat", "signed", "rgb", "overlay")


def render(attribution: np.ndarray, mode: str, display: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """Draw a (C, H, W) attribution as (H, W, 3) uint8.

    heat: max |a| over channels (the notes' saliency); signed: sum over channels,
    blue negative, red positive, zero white; rgb: the gradient itself as an image
    (centred, ±3 std); overlay: the heat map over the input picture.
    """
    values = np.asarray(attribution, dtype=np.float32)
    if mode == "rgb" and values.shape[0] == 3:
        centred = values - values.mean()
        scaled = centred / (3 * centred.std() + 1e-12) * 0.5 + 0.5
        return np.ascontiguousarray((np.clip(scaled, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0))
    if mode == "signed":
        signed = values.sum(axis=0)
        limit = float(np.percentile(np.abs(signed), 99.5)) or float(np.abs(signed).max()) or 1.0
        indices = np.clip((signed / limit * 0.5 + 0.5) * 255, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(colormap_table("coolwarm")[indices])
    heat = np.abs(values).max(axis=0)
    # Gradients are heavy-tailed: scale to the 99.5th percentile so more than a few pixels show.
    peak = float(np.percentile(heat, 99.5)) or float(heat.max()) or 1.0
    heat = np.clip(heat / peak, 0, 1)
    indices = (heat * 255).astype(np.uint8)
    coloured = colormap_table("inferno")[indices]
    if mode != "overlay":
        return np.ascontiguousarray(coloured)
    return blend(display, coloured, np.sqrt(heat)[..., None] * opacity)
