"""One layer's activations as a single mosaic picture, its statistics, and a channel over the input."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from cnnviewer.engine.types import LayerId
from cnnviewer.engine.views.colormaps import blend, colormap_table
from cnnviewer.engine.views.mosaic import MosaicLayout, arrange, packed_colormap, unpack

Normalisation = Literal["channel", "layer"]
SortOrder = Literal["index", "mean", "max"]


def as_channels(activation: np.ndarray) -> np.ndarray:
    """View any activation as (C, h, w) float32: vectors become C maps of 1x1."""
    values = np.asarray(activation).astype(np.float32, copy=False)
    if values.ndim == 3:
        return values
    if values.ndim <= 1:
        return values.reshape(-1, 1, 1)
    if values.ndim == 2:   # (tokens, features) from a transformer
        tokens, side = values.shape[0], math.isqrt(values.shape[0])
        extra = tokens - side * side      # class / distillation / register tokens come first
        if side >= 2 and extra <= 8:      # patch tokens back on their grid: one map per feature
            return np.ascontiguousarray(values[extra:].T.reshape(values.shape[1], side, side))
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
    aspect: float = 1.0   # width / height of the view the mosaic is fitted into


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
                     sort: SortOrder = "index", aspect: float = 1.0) -> FeatureMapView:
    """Build the mosaic of every channel of one layer.

    A layer of 1x1 maps (a Linear layer, the logits) is always scaled over the whole layer: per
    channel, each single value is its own min and max, and every cell would be the same colour."""
    values = as_channels(activation)
    if values.shape[1:] == (1, 1):
        normalisation = "layer"
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
    indices, layout = arrange(normalise(values, normalisation).astype(np.uint16), order, 1, 256, aspect)
    mosaic = unpack(packed_colormap(colormap).take(indices))
    return FeatureMapView(layer, mosaic, layout, values, channel_mean, channel_max, ActivationStats.of(values))


def overlay(display: np.ndarray, channel_map: np.ndarray, colormap: str = "inferno",
            opacity: float = 0.55) -> np.ndarray:
    """Blend one channel (h, w), stretched to the input picture's size, over it."""
    height, width = display.shape[:2]
    upscaled = np.asarray(Image.fromarray(np.asarray(channel_map, dtype=np.float32), mode="F")
                          .resize((width, height), Image.Resampling.BILINEAR))
    return blend(display, colormap_table(colormap)[normalise(upscaled[None], "channel")[0]], opacity)
