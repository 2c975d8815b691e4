"""Feature-map and filter mosaics: geometry, ordering, normalisation, statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cnnviewer.engine.structure.layers import conv_weights, find_conv
from cnnviewer.engine.views import colormaps, features, mosaic
from cnnviewer.engine.views.features import feature_map_view, overlay
from cnnviewer.engine.views.filters import filter_view, weight_stats
from cnnviewer.engine.views.mosaic import MosaicLayout


def random_activation(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_mosaic(mosaic: np.ndarray, layout: MosaicLayout) -> None:
    assert mosaic.shape == (*layout.size, 3)
    assert mosaic.dtype == np.uint8
    assert mosaic.flags.c_contiguous


# --------------------------------------------------------------------------- layout

@pytest.mark.parametrize(("channels", "height", "width", "sort"), [
    (1, 5, 5, "index"), (10, 3, 4, "mean"), (64, 8, 8, "max"), (7, 2, 9, "index"),
])
def test_every_tile_maps_back_to_its_channel(channels: int, height: int, width: int,
                                             sort: str) -> None:
    view = feature_map_view("x", random_activation((channels, height, width)), sort=sort)
    layout = view.layout

    assert_mosaic(view.mosaic, layout)
    assert layout.count == channels and layout.rows * layout.cols >= channels
    assert sorted(layout.order) == list(range(channels))
    for tile in range(channels):
        y, x = layout.tile_origin(tile)
        channel = layout.order[tile]
        assert layout.channel_at(y, x) == (channel, 0, 0)
        assert layout.channel_at(y + height - 1, x + width - 1) == (channel, height - 1, width - 1)
        assert layout.channel_at(y + 0.9, x + 0.9) == (channel, 0, 0)
        assert layout.tile_of_channel(channel) == tile
        if layout.gap:
            assert layout.channel_at(y + height, x) is None       # gap below
            assert layout.channel_at(y, x + width) is None        # gap to the right


def test_gaps_and_outside_return_none() -> None:
    view = feature_map_view("x", random_activation((5, 4, 4)))   # 3 columns, 2 rows, 1 empty slot
    layout = view.layout

    assert (layout.rows, layout.cols, layout.gap) == (2, 3, 1)
    assert layout.size == (9, 14)
    assert layout.channel_at(4, 0) is None                  # horizontal gap row
    assert layout.channel_at(0, 4) is None                  # vertical gap column
    assert layout.channel_at(5, 10) is None                 # the empty sixth slot
    assert layout.channel_at(-1, 0) is None
    assert layout.channel_at(0, -0.5) is None
    assert layout.channel_at(0, 14) is None                 # right of the mosaic
    assert layout.channel_at(9, 0) is None                  # below the mosaic
    assert layout.channel_at(5, 5) == (4, 0, 0)
    assert (view.mosaic[4, :] == mosaic.GAP_COLOUR).all()
    assert (view.mosaic[5:, 10:] == mosaic.GAP_COLOUR).all()


def test_mosaic_pixels_show_the_right_channel() -> None:
    # Channel c is constant c: with layer normalisation and a gray map its tile is c * 85.
    activation = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 3, 2), np.float32)

    view = feature_map_view("x", activation, normalisation="layer", colormap="gray")

    for tile in range(4):
        y, x = view.layout.tile_origin(tile)
        block = view.mosaic[y:y + 3, x:x + 2]
        assert (block == tile * 85).all()


# --------------------------------------------------------------------------- sorting

def test_sort_by_mean_and_max() -> None:
    activation = np.zeros((4, 1, 2), dtype=np.float32)
    activation[:, 0, 0] = [1.0, 5.0, 0.0, 2.0]
    activation[:, 0, 1] = [1.0, -5.0, 6.0, 2.0]
    # means 1, 0, 3, 2; maxima 1, 5, 6, 2

    by_index = feature_map_view("x", activation)
    by_mean = feature_map_view("x", activation, sort="mean")
    by_max = feature_map_view("x", activation, sort="max")

    assert by_index.layout.order == (0, 1, 2, 3)
    assert by_mean.layout.order == (2, 3, 0, 1)
    assert by_max.layout.order == (2, 1, 3, 0)
    np.testing.assert_allclose(by_mean.channel_mean, [1, 0, 3, 2])
    np.testing.assert_allclose(by_max.channel_max, [1, 5, 6, 2])
    assert by_mean.layout.channel_at(0, 0) == (2, 0, 0)
    assert np.all(np.diff(by_mean.channel_mean[list(by_mean.layout.order)]) <= 0)


def test_sort_ties_keep_index_order() -> None:
    view = feature_map_view("x", np.ones((5, 2, 2), dtype=np.float32), sort="mean")
    assert view.layout.order == (0, 1, 2, 3, 4)


# --------------------------------------------------------------------------- normalisation

def test_channel_and_layer_normalisation_values() -> None:
    activation = np.array([[[0.0, 1.0]], [[0.0, 3.0]], [[2.0, 2.0]]], dtype=np.float32)  # (3, 1, 2)

    per_channel = features.normalise(activation, "channel")
    per_layer = features.normalise(activation, "layer")

    np.testing.assert_array_equal(per_channel[:, 0], [[0, 255], [0, 255], [0, 0]])
    np.testing.assert_array_equal(per_layer[:, 0], [[0, 85], [0, 255], [170, 170]])
    assert per_channel.dtype == per_layer.dtype == np.uint8


def test_normalisation_reaches_the_mosaic() -> None:
    activation = np.array([[[0.0, 1.0]], [[0.0, 3.0]]], dtype=np.float32)

    channel = feature_map_view("x", activation, normalisation="channel", colormap="gray")
    layer = feature_map_view("x", activation, normalisation="layer", colormap="gray")

    assert channel.mosaic[0, 1].tolist() == [255] * 3      # channel 0's max -> white
    assert layer.mosaic[0, 1].tolist() == [85] * 3         # 1 of 0..3 over the layer
    np.testing.assert_array_equal(channel.values, activation)


def test_colormap_tables() -> None:
    for name in colormaps.COLORMAPS:
        table = colormaps.colormap_table(name)
        assert table.shape == (256, 3) and table.dtype == np.uint8
    gray = colormaps.colormap_table("gray")
    np.testing.assert_array_equal(gray, np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1))


# --------------------------------------------------------------------------- sizes and ranks

def test_mobilenet_sized_layer_builds() -> None:
    view = feature_map_view("features.18", random_activation((1280, 7, 7)), sort="max")

    assert (view.layout.rows, view.layout.cols) == (36, 36)
    assert view.mosaic.shape == (287, 287, 3)
    assert_mosaic(view.mosaic, view.layout)
    assert view.channel_mean.shape == view.channel_max.shape == (1280,)
    y, x = view.layout.tile_origin(1279)
    assert view.layout.channel_at(y + 6, x + 6) == (view.layout.order[1279], 6, 6)


def test_vector_becomes_one_pixel_tiles() -> None:
    view = feature_map_view("fc", np.arange(10, dtype=np.float32), normalisation="layer")

    layout = view.layout
    assert (layout.count, layout.tile_height, layout.tile_width) == (10, 1, 1)
    assert view.values.shape == (10, 1, 1)
    assert_mosaic(view.mosaic, layout)
    for channel in range(10):
        assert layout.channel_at(*layout.tile_origin(channel)) == (channel, 0, 0)


def test_tokens_by_features_show_features_as_channels() -> None:
    tokens = np.arange(12, dtype=np.float32).reshape(3, 4)   # (tokens, features)

    view = feature_map_view("encoder", tokens)

    assert view.values.shape == (4, 3, 1)
    np.testing.assert_array_equal(view.values[:, :, 0], tokens.T)


def test_scalar_activation() -> None:
    view = feature_map_view("loss", np.float32(2.5))
    assert view.layout.count == 1 and view.mosaic.shape == (1, 1, 3)


# --------------------------------------------------------------------------- filters

def test_first_layer_filters_are_rgb_tiles() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 5)

    view = filter_view("conv1", conv_weights(conv))

    assert view.rgb and view.output_channel is None
    assert (view.layout.count, view.layout.tile_height, view.layout.tile_width) == (8, 5, 5)
    assert_mosaic(view.mosaic, view.layout)
    weight = conv.weight.detach().numpy()
    limit = np.abs(weight).max()
    expected = np.round((weight[2] / (2 * limit) + 0.5) * 255).astype(np.uint8).transpose(1, 2, 0)
    y, x = view.layout.tile_origin(2)
    np.testing.assert_array_equal(view.mosaic[y:y + 5, x:x + 5], expected)


def test_filter_mid_gray_is_zero() -> None:
    conv = nn.Conv2d(3, 1, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0
        conv.weight[0, 1, 0, 0] = -1.0

    view = filter_view("conv", conv_weights(conv))

    assert view.mosaic[0, 0].tolist() == [255, 0, 128]
    assert (view.mosaic[1:] == 128).all()


@pytest.mark.parametrize(("in_channels", "groups", "tiles"), [(16, 1, 16), (16, 4, 4), (16, 16, 1)])
def test_deeper_conv_shows_one_output_channel_in_gray(in_channels: int, groups: int,
                                                      tiles: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, 32, 3, groups=groups)

    view = filter_view("block.conv", conv_weights(conv), output_channel=5)

    assert not view.rgb and view.output_channel == 5
    assert (view.layout.count, view.layout.tile_height, view.layout.tile_width) == (tiles, 3, 3)
    assert_mosaic(view.mosaic, view.layout)
    for tile in range(tiles):
        y, x = view.layout.tile_origin(tile)
        block = view.mosaic[y:y + 3, x:x + 3]
        assert (block == block[..., :1]).all()          # gray: R == G == B
    kernels = conv.weight.detach().numpy()[5]
    expected = np.round((kernels[0] / (2 * np.abs(kernels).max()) + 0.5) * 255)
    np.testing.assert_array_equal(view.mosaic[:3, :3, 0], expected)


def test_output_channel_is_clipped_and_defaults_to_zero() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 4, 3)
    assert filter_view("c", conv_weights(conv)).output_channel == 0
    assert filter_view("c", conv_weights(conv), output_channel=99).output_channel == 3
    assert filter_view("c", conv_weights(conv), output_channel=-3).output_channel == 0


def test_first_layer_single_output_channel_is_gray() -> None:
    torch.manual_seed(0)
    view = filter_view("conv1", conv_weights(nn.Conv2d(3, 8, 7)), output_channel=1)
    assert not view.rgb and view.layout.count == 3 and view.output_channel == 1


def test_weight_stats_match_numpy() -> None:
    weight = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32)
    weight[0, 0] = 0.0
    weight[1, 0, 0, 0] = 1e-6

    stats = weight_stats(weight)

    assert stats.shape == (8, 4, 3, 3) and stats.count == 288
    assert stats.mean == pytest.approx(float(weight.mean()))
    assert stats.std == pytest.approx(float(weight.std()))
    assert stats.minimum == float(weight.min()) and stats.maximum == float(weight.max())
    threshold = 1e-3 * np.abs(weight).max()
    assert stats.near_zero == pytest.approx(float((np.abs(weight) < threshold).mean()))
    assert stats.near_zero >= 10 / 288
    assert weight_stats(np.zeros((2, 2), np.float32)).near_zero == 1.0


def test_filter_view_reports_stats() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 2, 3)
    view = filter_view("c", conv_weights(conv), output_channel=0)
    assert view.stats.count == 2 * 4 * 3 * 3
    assert view.stats.maximum == pytest.approx(float(conv.weight.detach().max()))


def test_find_conv() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1)))

    assert find_conv(model, "1")[0] == "1.1"          # first conv inside the block
    assert find_conv(model, "1.1")[0] == "1.1"        # the conv itself
    assert find_conv(model, "1.0")[0] == "0"          # no conv inside: the model's first
    assert find_conv(model, None)[0] == "0"
    assert find_conv(nn.Sequential(nn.Linear(2, 2)), None) is None


# --------------------------------------------------------------------------- overlay

@pytest.mark.parametrize("size", [(224, 224), (100, 60)])
def test_overlay_shape_and_dtype(size: tuple[int, int]) -> None:
    display = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)

    blended = overlay(display, random_activation((7, 7)))

    assert blended.shape == (*size, 3)
    assert blended.dtype == np.uint8 and blended.flags.c_contiguous


def test_overlay_opacity_extremes() -> None:
    display = np.full((16, 16, 3), 90, dtype=np.uint8)
    channel = np.zeros((4, 4), dtype=np.float32)
    channel[0, 0] = 1.0

    np.testing.assert_array_equal(overlay(display, channel, opacity=0.0), display)
    opaque = overlay(display, channel, colormap="gray", opacity=1.0)
    assert opaque[0, 0].tolist() == [255] * 3 and opaque[15, 15].tolist() == [0] * 3


def test_layer_conv_explains_the_block_channels() -> None:
    from cnnviewer.engine.structure.layers import layer_conv

    resnet = torchvision.models.resnet50(weights=None)
    assert layer_conv(resnet, "layer1.0", 256)[0] == "layer1.0.conv3"      # not downsample.0
    assert layer_conv(resnet, "layer1.0.conv2", 64)[0] == "layer1.0.conv2"
    assert layer_conv(resnet, "layer1.0.bn1", 64) is None                  # no conv inside
    mobilenet = torchvision.models.mobilenet_v2(weights=None)
    assert layer_conv(mobilenet, "features.3", 24)[0] == "features.3.conv.2"   # projection, 144 -> 24
    densenet = torchvision.models.densenet121(weights=None)
    name, conv = layer_conv(densenet, "features.denseblock1", 256)         # concat: no conv has 256 outputs
    assert name == "features.denseblock1.denselayer6.conv2" and conv.out_channels == 32


def test_layer_statistics() -> None:
    values = np.zeros((3, 2, 2), np.float32)
    values[0] = [[1, 2], [3, 4]]
    values[1, 0, 0] = -2
    view = feature_map_view("relu", values)
    stats = view.stats
    assert (stats.minimum, stats.maximum) == (-2.0, 4.0)
    assert stats.mean == pytest.approx(values.mean()) and stats.std == pytest.approx(values.std())
    assert stats.zero_fraction == pytest.approx(7 / 12)
    assert stats.dead_channels == 1


def test_side_by_side_tiles_carry_titles_and_colour_keys() -> None:
    from cnnviewer.engine.views.heatmaps import (
        BAR_HEIGHT,
        GAP,
        TITLE_HEIGHT,
        colour_bar,
        side_by_side,
    )

    tiles = [np.full((32, 40, 3), value, np.uint8) for value in (10, 120, 250, 60)]
    grid = side_by_side(tiles, ["saliency", "grad-cam", "occlusion", "deconvnet"], "heat", columns=3)
    cell = TITLE_HEIGHT + 32 + GAP + BAR_HEIGHT
    assert grid.shape == (2 * (cell + GAP), 3 * (40 + GAP), 3)
    assert (grid[:TITLE_HEIGHT, :40] > 200).any()                       # the first title is written
    np.testing.assert_array_equal(grid[TITLE_HEIGHT:TITLE_HEIGHT + 32, 44:84], tiles[1])
    np.testing.assert_array_equal(grid[cell - BAR_HEIGHT:cell, :40], colour_bar("heat", 40))
    assert colour_bar("rgb", 40) is None and side_by_side(tiles[:1], ["x"], "rgb").shape[0] == TITLE_HEIGHT + 32 + GAP


@pytest.mark.parametrize("count, tile, aspect", [(32, 3, 4.4), (64, 7, 0.4), (1280, 7, 1.6), (24, 56, 2.0)])
def test_mosaic_grid_fills_the_view_it_is_drawn_in(count, tile, aspect) -> None:
    """The chosen grid shows tiles at least as large as any other grid would in that view."""
    from cnnviewer.engine.views.mosaic import grid_shape

    def scale(rows: int, cols: int) -> float:
        return min(aspect / (cols * (tile + 1) - 1), 1 / (rows * (tile + 1) - 1))

    rows, cols = grid_shape(count, tile, tile, aspect)
    assert rows * cols >= count and (rows - 1) * cols < count
    best = max(scale(-(-count // c), c) for c in range(1, count + 1))
    assert scale(rows, cols) == pytest.approx(best)
    square = grid_shape(count, tile, tile)            # what a square view gets
    if aspect > 1.5:
        assert cols > square[1] and scale(rows, cols) > 1.1 * scale(*square)
