"""Many small images as one mosaic picture, and the arithmetic that maps its pixels back to tiles.

A layer with 1,280 channels is one (H, W, 3) uint8 picture, not 1,280 widgets:
the UI shows it in one image item and maps clicks to tiles through
`MosaicLayout`. Vectorised numpy: a 256x56x56 layer builds in a few milliseconds.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cnnviewer.engine.views.colormaps import colormap_table

GAP_COLOUR = np.array([40, 40, 46], dtype=np.uint8)


@dataclass(frozen=True)
class MosaicLayout:
    """Where each tile sits in a mosaic; maps pixels to tiles and back."""

    count: int
    rows: int
    cols: int
    tile_height: int
    tile_width: int
    gap: int
    order: tuple[int, ...]   # order[k] = channel shown in tile k

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the whole mosaic in pixels."""
        return (self.rows * (self.tile_height + self.gap) - self.gap,
                self.cols * (self.tile_width + self.gap) - self.gap)

    def tile_origin(self, tile: int) -> tuple[int, int]:
        """Top-left (y, x) pixel of tile number `tile`."""
        row, col = divmod(tile, self.cols)
        return row * (self.tile_height + self.gap), col * (self.tile_width + self.gap)

    def channel_at(self, y: float, x: float) -> tuple[int, int, int] | None:
        """(channel, y, x inside that channel) under a mosaic pixel, or None on a gap."""
        if y < 0 or x < 0:
            return None
        row, inner_y = divmod(int(y), self.tile_height + self.gap)
        col, inner_x = divmod(int(x), self.tile_width + self.gap)
        tile = row * self.cols + col
        if col >= self.cols or tile >= self.count:
            return None
        if inner_y >= self.tile_height or inner_x >= self.tile_width:
            return None
        return self.order[tile], inner_y, inner_x

    def tile_of_channel(self, channel: int) -> int:
        """Tile index showing `channel`."""
        return self.order.index(channel)


def grid_shape(count: int, tile_height: int, tile_width: int, aspect: float = 1.0,
               gap: int = 1) -> tuple[int, int]:
    """(rows, cols) whose mosaic, fitted into a view `aspect` (width / height) wide, shows the
    tiles largest: 32 filters in a wide, short panel go 16 x 2, not 6 x 6 in its middle."""
    aspect = aspect if math.isfinite(aspect) and aspect > 0 else 1.0
    best, best_scale = (max(1, count), 1), -1.0
    for cols in range(max(1, count), 0, -1):   # on a tie the wider grid wins (screens are wide)
        rows = math.ceil(count / cols)
        scale = min(aspect / (cols * (tile_width + gap) - gap), 1.0 / (rows * (tile_height + gap) - gap))
        if scale > best_scale * (1 + 1e-9):
            best, best_scale = (rows, cols), scale
    return best


def arrange(tiles: np.ndarray, order: np.ndarray, gap: int, background,
            aspect: float = 1.0) -> tuple[np.ndarray, MosaicLayout]:
    """Lay (N, h, w) scalar tiles (any dtype) out on a grid: (H, W) plus the layout.

    Scalars, not RGB triples: moving one 4-byte value per pixel is several
    times faster in numpy than moving three bytes along a short last axis.
    """
    count, height, width = tiles.shape
    rows, cols = grid_shape(count, height, width, aspect, gap)
    padded = np.full((rows * cols, height + gap, width + gap), background, dtype=tiles.dtype)
    padded[:count, :height, :width] = tiles[order]
    mosaic = padded.reshape(rows, cols, height + gap, width + gap).transpose(0, 2, 1, 3)
    mosaic = mosaic.reshape(rows * (height + gap), cols * (width + gap))[:-gap or None, :-gap or None]
    layout = MosaicLayout(count, rows, cols, height, width, gap, tuple(int(i) for i in order))
    return np.ascontiguousarray(mosaic), layout


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) uint32 (RGBA bytes, opaque)."""
    rgba = np.empty((*rgb.shape[:-1], 4), dtype=np.uint8)
    rgba[..., :3] = rgb
    rgba[..., 3] = 255
    return rgba.view(np.uint32)[..., 0]


def unpack(packed: np.ndarray) -> np.ndarray:
    """(H, W) uint32 from `_pack` -> C-contiguous (H, W, 3) uint8 (Pillow drops alpha in C)."""
    height, width = packed.shape
    rgba = Image.frombuffer("RGBA", (width, height), np.ascontiguousarray(packed), "raw", "RGBA", 0, 1)
    return np.asarray(rgba.convert("RGB"))


def tile(images: np.ndarray, order: np.ndarray | None = None, gap: int = 1,
         background: np.ndarray = GAP_COLOUR, aspect: float = 1.0) -> tuple[np.ndarray, MosaicLayout]:
    """Arrange (N, h, w, 3) uint8 tiles into one (H, W, 3) mosaic with gaps, for a view `aspect` wide."""
    order = np.arange(images.shape[0]) if order is None else np.asarray(order)
    packed, layout = arrange(_pack(images), order, gap, _pack(np.asarray(background, np.uint8)), aspect)
    return unpack(packed), layout


@functools.cache
def packed_colormap(name: str) -> np.ndarray:
    """A colormap as 257 packed colours: 0..255 for values, 256 for the gaps between tiles."""
    return _pack(np.concatenate([colormap_table(name), GAP_COLOUR[None]]))
