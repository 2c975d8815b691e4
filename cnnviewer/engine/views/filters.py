"""Convolution kernels as mosaics: first-layer filters as colour images, deeper kernels as gray grids.

Numpy only: the job thread hands over the weights as an array
(`structure.layers.conv_weights`), so this module never sees torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnviewer.engine.types import LayerId
from cnnviewer.engine.views.colormaps import signed_to_uint8
from cnnviewer.engine.views.mosaic import MosaicLayout, tile


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


def weight_stats(weight: np.ndarray) -> WeightStats:
    """Mean, spread and sparsity of a weight array."""
    largest = float(np.abs(weight).max()) if weight.size else 0.0
    return WeightStats(
        shape=tuple(weight.shape), count=int(weight.size), mean=float(weight.mean()),
        std=float(weight.std()), minimum=float(weight.min()), maximum=float(weight.max()),
        near_zero=float((np.abs(weight) < 1e-3 * largest).mean()) if largest else 1.0,
    )


def first_layer_view(layer: LayerId, weight: np.ndarray, aspect: float = 1.0) -> FilterView:
    """Every filter of the first convolution: colour images for RGB input, else gray tiles
    of each filter's kernel on input channel 0.

    Args:
        weight: (out, in/groups, kh, kw) float32.
    """
    if weight.shape[1] == 3:
        return filter_view(layer, weight, aspect=aspect)
    gray = signed_to_uint8(weight[:, 0])                            # (out, kh, kw)
    mosaic, layout = tile(np.repeat(gray[..., None], 3, axis=3), aspect=aspect)
    return FilterView(layer, mosaic, layout, False, None, weight_stats(weight))


def filter_view(layer: LayerId, weight: np.ndarray, output_channel: int | None = None,
                aspect: float = 1.0) -> FilterView:
    """First-layer (3-input) filters as RGB images, other convs' kernels as a gray grid.

    Args:
        weight: (out, in/groups, kh, kw) float32.
        output_channel: whose kernels to show; None shows RGB filters when the input is RGB.
    """
    stats = weight_stats(weight)
    if weight.shape[1] == 3 and output_channel is None:
        tiles = signed_to_uint8(weight).transpose(0, 2, 3, 1)
        mosaic, layout = tile(np.ascontiguousarray(tiles), aspect=aspect)
        return FilterView(layer, mosaic, layout, True, None, stats)
    channel = int(np.clip(output_channel or 0, 0, weight.shape[0] - 1))
    gray = signed_to_uint8(weight[channel])                          # (in/groups, kh, kw)
    # 1x1 kernels read best as one block of pixels (one per input channel), without gaps.
    gap = 0 if weight.shape[2:] == (1, 1) else 1
    mosaic, layout = tile(np.repeat(gray[..., None], 3, axis=3), gap=gap, aspect=aspect)
    return FilterView(layer, mosaic, layout, False, channel, stats)
