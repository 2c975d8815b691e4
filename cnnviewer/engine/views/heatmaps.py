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


TITLE_HEIGHT = 18
BAR_HEIGHT = 8
GAP = 4
BACKGROUND = 40


def colour_bar(mode: str, width: int) -> np.ndarray | None:
    """(BAR_HEIGHT, width, 3) uint8 key for `mode`: inferno 0 → max, coolwarm −max → +max; None for rgb."""
    if mode == "rgb":
        return None
    table = colormap_table("coolwarm" if mode == "signed" else "inferno")
    ramp = table[np.linspace(0, 255, width).astype(np.uint8)]
    return np.ascontiguousarray(np.repeat(ramp[None], BAR_HEIGHT, axis=0))


def side_by_side(pictures: list[np.ndarray], titles: list[str], mode: str, columns: int = 3) -> np.ndarray:
    """Tiles in a grid, each with its title above and the colour key of `mode` below (attribution tools' layout).

    Args:
        pictures: (H, W, 3) uint8, all the same size.
        titles: one per picture, e.g. the method's name.
    """
    from PIL import Image, ImageDraw, ImageFont

    height, width = pictures[0].shape[:2]
    bar = colour_bar(mode, width)
    cell_height = TITLE_HEIGHT + height + (GAP + BAR_HEIGHT if bar is not None else 0)
    rows = -(-len(pictures) // columns)
    grid = np.full((rows * (cell_height + GAP), min(columns, len(pictures)) * (width + GAP), 3), BACKGROUND,
                   dtype=np.uint8)
    for index, picture in enumerate(pictures):
        row, column = divmod(index, columns)
        y, x = row * (cell_height + GAP), column * (width + GAP)
        grid[y + TITLE_HEIGHT:y + TITLE_HEIGHT + height, x:x + width] = picture
        if bar is not None:
            grid[y + TITLE_HEIGHT + height + GAP:y + cell_height, x:x + width] = bar
    canvas = Image.fromarray(grid)
    pen = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=TITLE_HEIGHT - 5)   # Pillow's own scalable font: no system font needed
    for index, title in enumerate(titles):
        row, column = divmod(index, columns)
        pen.text((column * (width + GAP) + 3, row * (cell_height + GAP) + 1), title, fill=(235, 235, 235), font=font)
    return np.ascontiguousarray(np.asarray(canvas))
