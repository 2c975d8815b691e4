"""Turn activations and convolution weights into single mosaic images.

Only numpy at import time, so the UI may import the result types without
torch. A layer with 1,280 channels is one (H, W, 3) uint8 picture, not 1,280 widgets:
the UI shows it in one image item and maps clicks to tiles arithmetically
through `MosaicLayout`. Everything here is vectorised numpy so a 256x56x56
layer builds in a few milliseconds.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from cnnviewer.engine.types import LayerId

if TYPE_CHECKING:  # torch is imported lazily: the UI thread uses this module too
    from torch import nn

Normalisation = Literal["channel", "layer"]
SortOrder = Literal["index", "mean", "max"]

GAP_COLOUR = np.array([40, 40, 46], dtype=np.uint8)

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


def grid_shape(count: int, tile_height: int, tile_width: int) -> tuple[int, int]:
    """(rows, cols) that make the mosaic roughly square on screen."""
    cols = max(1, math.ceil(math.sqrt(count * tile_height / max(tile_width, 1))))
    return math.ceil(count / cols), cols


def _arrange(tiles: np.ndarray, order: np.ndarray, gap: int, background) -> tuple[np.ndarray, MosaicLayout]:
    """Lay (N, h, w) scalar tiles (any dtype) out on a grid: (H, W) plus the layout.

    Scalars, not RGB triples: moving one 4-byte value per pixel is several
    times faster in numpy than moving three bytes along a short last axis.
    """
    count, height, width = tiles.shape
    rows, cols = grid_shape(count, height, width)
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


def _unpack(packed: np.ndarray) -> np.ndarray:
    """(H, W) uint32 from `_pack` -> C-contiguous (H, W, 3) uint8 (Pillow drops alpha in C)."""
    height, width = packed.shape
    rgba = Image.frombuffer("RGBA", (width, height), np.ascontiguousarray(packed), "raw", "RGBA", 0, 1)
    return np.asarray(rgba.convert("RGB"))


def tile(images: np.ndarray, order: np.ndarray | None = None, gap: int = 1,
         background: np.ndarray = GAP_COLOUR) -> tuple[np.ndarray, MosaicLayout]:
    """Arrange (N, h, w, 3) uint8 tiles into one (H, W, 3) mosaic with gaps."""
    order = np.arange(images.shape[0]) if order is None else np.asarray(order)
    packed, layout = _arrange(_pack(images), order, gap, _pack(np.asarray(background, np.uint8)))
    return _unpack(packed), layout


@functools.cache
def _packed_table(name: str) -> np.ndarray:
    """A colormap as 257 packed colours: 0..255 for values, 256 for the gaps between tiles."""
    return _pack(np.concatenate([colormap_table(name), GAP_COLOUR[None]]))


def as_channels(activation: np.ndarray) -> np.ndarray:
    """View any activation as (C, h, w) float32: vectors become C maps of 1x1."""
    values = np.asarray(activation).astype(np.float32, copy=False)
    if values.ndim == 3:
        return values
    if values.ndim <= 1:
        return values.reshape(-1, 1, 1)
    if values.ndim == 2:   # (tokens, features) from transformers: features as channels
        return np.ascontiguousarray(values.T[:, :, None])
    return values.reshape(values.shape[0], values.shape[1], -1)


def normalise(values: np.ndarray, mode: Normalisation) -> np.ndarray:
    """Scale (C, h, w) values to uint8 0..255 per channel or over the whole layer."""
    if not np.isfinite(values).all():   # a diverged model: draw inf/nan as the channel's extremes
        values = np.nan_to_num(values, nan=0.0, posinf=np.finfo(np.float32).max / 4,
                               neginf=-np.finfo(np.float32).max / 4)
    axes = (1, 2) if mode == "channel" else None
    low = values.min(axis=axes, keepdims=True)
    high = values.max(axis=axes, keepdims=True)
    scale = np.where(high > low, 255.0 / np.maximum(high - low, 1e-12), 0.0).astype(np.float32)
    return ((values - low) * scale).astype(np.uint8)


@dataclass(frozen=True)
class ActivationStats:
    """Whole-layer summary shown beside its mosaic."""

    minimum: float
    maximum: float
    mean: float
    std: float
    zero_fraction: float   # exactly 0: how sparse a ReLU layer is
    dead_channels: int     # channels that are 0 everywhere for this input

    @staticmethod
    def of(values: np.ndarray) -> ActivationStats:
        """Statistics of (C, h, w) activations."""
        flat = values.reshape(values.shape[0], -1)
        return ActivationStats(float(values.min()), float(values.max()), float(values.mean()),
                               float(values.std()), float((values == 0).mean()),
                               int((~flat.any(axis=1)).sum()))


@dataclass(frozen=True)
class FeatureMapOptions:
    """How the feature-map mosaic is drawn."""

    normalisation: Normalisation = "channel"
    colormap: str = "viridis"
    sort: SortOrder = "index"


@dataclass(frozen=True, eq=False)
class FeatureMapView:
    """One layer's activations, drawn, plus what hover and click need.

    Attributes:
        layer: dotted module name.
        mosaic: (H, W, 3) uint8, C-contiguous.
        layout: tile geometry and channel order.
        values: (C, h, w) float32 raw activations.
        channel_mean, channel_max: (C,) float32 per-channel statistics.
    """

    layer: LayerId
    mosaic: np.ndarray
    layout: MosaicLayout
    values: np.ndarray
    channel_mean: np.ndarray
    channel_max: np.ndarray
    stats: ActivationStats | None = None


def feature_map_view(layer: LayerId, activation: np.ndarray, *,
                     normalisation: Normalisation = "channel", colormap: str = "viridis",
                     sort: SortOrder = "index") -> FeatureMapView:
    """Build the mosaic of every channel of one layer."""
    values = as_channels(activation)
    flat = values.reshape(values.shape[0], -1)
    channel_mean = flat.mean(axis=1)
    channel_max = flat.max(axis=1)
    if sort == "mean":
        order = np.argsort(-channel_mean, kind="stable")
    elif sort == "max":
        order = np.argsort(-channel_max, kind="stable")
    else:
        order = np.arange(values.shape[0])
    # Arrange the 1-byte indices first, colour the finished mosaic in one lookup.
    indices, layout = _arrange(normalise(values, normalisation).astype(np.uint16), order, 1, 256)
    mosaic = _unpack(_packed_table(colormap).take(indices))
    return FeatureMapView(layer, mosaic, layout, values, channel_mean, channel_max, ActivationStats.of(values))


def overlay(display: np.ndarray, channel_map: np.ndarray, colormap: str = "inferno",
            opacity: float = 0.55) -> np.ndarray:
    """Blend one channel (h, w), stretched to the input picture's size, over it."""
    height, width = display.shape[:2]
    upscaled = np.asarray(Image.fromarray(np.asarray(channel_map, dtype=np.float32), mode="F")
                          .resize((width, height), Image.Resampling.BILINEAR))
    coloured = colormap_table(colormap)[normalise(upscaled[None], "channel")[0]].astype(np.float32)
    blended = (1.0 - opacity) * display.astype(np.float32) + opacity * coloured
    return np.ascontiguousarray(np.clip(blended, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- filters

@dataclass(frozen=True)
class WeightStats:
    """Summary of a convolution's weights."""

    shape: tuple[int, ...]
    count: int
    mean: float
    std: float
    minimum: float
    maximum: float
    near_zero: float   # fraction with |w| < 1e-3 * max|w|


@dataclass(frozen=True, eq=False)
class FilterView:
    """A convolution's kernels as one mosaic.

    `rgb` is True for first-layer filters shown as colour images (one tile per
    output channel); otherwise tiles are the chosen output channel's kernel for
    each input channel of its group, in grayscale with zero at mid-gray.
    """

    layer: LayerId
    mosaic: np.ndarray
    layout: MosaicLayout
    rgb: bool
    output_channel: int | None
    stats: WeightStats
    # The conv's output channels are the selected layer's channels (so a
    # channel chosen here is the same channel in the feature maps).
    matches_layer: bool = True


def find_conv(model: nn.Module, layer: LayerId | None) -> tuple[LayerId, nn.Module] | None:
    """The convolution for `layer`: itself, its first conv inside, else the model's first."""
    from torch import nn

    modules = dict(model.named_modules())
    candidates = []
    if layer is not None and layer in modules:
        candidates = [(f"{layer}.{n}" if n else layer, m) for n, m in modules[layer].named_modules()]
    candidates += list(modules.items())
    for name, module in candidates:
        if isinstance(module, nn.modules.conv._ConvNd) and module.weight.dim() == 4:
            return name, module
    return None


_SHORTCUT_WORDS = ("downsample", "shortcut", "skip", "identity")


def layer_conv(model: nn.Module, layer: LayerId, channels: int | None) -> tuple[LayerId, nn.Module] | None:
    """The convolution that explains `layer`'s channels: itself, or inside a block
    the last main-path conv whose output channels equal the block's (a ResNet
    bottleneck's conv3, not its downsample; an inverted residual's projection).
    None when the layer holds no convolution.
    """
    from torch import nn

    modules = dict(model.named_modules())
    if layer not in modules:
        return None
    convs = [(f"{layer}.{n}" if n else layer, m) for n, m in modules[layer].named_modules()
             if isinstance(m, nn.modules.conv._ConvNd) and m.weight.dim() == 4]
    if not convs:
        return None
    main_path = [(n, m) for n, m in convs if not any(w in n[len(layer):] for w in _SHORTCUT_WORDS)] or convs
    matching = [(n, m) for n, m in main_path if channels is not None and m.out_channels == channels]
    return (matching or main_path)[-1]


def weight_stats(weight: np.ndarray) -> WeightStats:
    """Mean, spread and sparsity of a weight array."""
    largest = float(np.abs(weight).max()) if weight.size else 0.0
    return WeightStats(
        shape=tuple(weight.shape), count=int(weight.size), mean=float(weight.mean()),
        std=float(weight.std()), minimum=float(weight.min()), maximum=float(weight.max()),
        near_zero=float((np.abs(weight) < 1e-3 * largest).mean()) if largest else 1.0,
    )


def first_layer_view(layer: LayerId, conv: nn.Module) -> FilterView:
    """Every filter of the first convolution: colour images for RGB input, else gray tiles
    of each filter's kernel on input channel 0."""
    weight = conv.weight.detach().float().cpu().numpy()
    if weight.shape[1] == 3:
        return filter_view(layer, conv)
    kernels = weight[:, 0]                                     # (out, kh, kw)
    limit = np.abs(kernels).max() or 1.0
    gray = ((kernels / (2 * limit) + 0.5) * 255).round().astype(np.uint8)
    mosaic, layout = tile(np.repeat(gray[..., None], 3, axis=3))
    return FilterView(layer, mosaic, layout, False, None, weight_stats(weight))


def filter_view(layer: LayerId, conv: nn.Module, output_channel: int | None = None) -> FilterView:
    """First-layer (3-input) filters as RGB images, other convs' kernels as a gray grid."""
    weight = conv.weight.detach().float().cpu().numpy()     # (out, in/groups, kh, kw)
    stats = weight_stats(weight)
    if weight.shape[1] == 3 and output_channel is None:
        limit = np.abs(weight).max() or 1.0
        tiles = ((weight / (2 * limit) + 0.5) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        mosaic, layout = tile(np.ascontiguousarray(tiles))
        return FilterView(layer, mosaic, layout, True, None, stats)
    channel = int(np.clip(output_channel or 0, 0, weight.shape[0] - 1))
    kernels = weight[channel]                                  # (in/groups, kh, kw)
    limit = np.abs(kernels).max() or 1.0
    gray = ((kernels / (2 * limit) + 0.5) * 255).round().astype(np.uint8)
    # 1x1 kernels read best as one block of pixels (one per input channel), without gaps.
    gap = 0 if kernels.shape[1:] == (1, 1) else 1
    mosaic, layout = tile(np.repeat(gray[..., None], 3, axis=3), gap=gap)
    return FilterView(layer, mosaic, layout, False, channel, stats)
