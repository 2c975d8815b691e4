"""The equivariance / invariance probe and Zhang's consistency (issue 24), against cases whose answer is
known by construction: circular padding, a max-pool window, mirror-symmetric kernels, torch.rot90, a
model whose top-1 is set by one pixel; then one real MobileNetV2 run (ImageNet weights, the cat)."""

from __future__ import annotations

import os

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")

import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnviewer.engine.experiments.consistency import consistency, consistency_details
from cnnviewer.engine.experiments.equivariance import (
    default_amounts,
    probe,
    transformed_inputs,
)
from cnnviewer.engine.media.images import from_array, sample_image
from cnnviewer.engine.models.handle import Preprocess, wrap_module
from cnnviewer.engine.runtime.hooks import has_hooks

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PLAIN = Preprocess(resize_size=32, crop_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def wrapped(module: nn.Module, preprocess: Preprocess = PLAIN, name: str = "toy"):
    return wrap_module(module, name, preprocess=preprocess, categories=tuple(f"c{i}" for i in range(4)))


def conv_net(padding_mode: str) -> nn.Module:
    """Stride-1 convolutions only; global pooling and a linear head."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, padding_mode=padding_mode), nn.ReLU(),
                         nn.Conv2d(8, 8, 5, padding=2, padding_mode=padding_mode), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def photo(size: int = 32):
    pixels = np.asarray(sample_image("chelsea").pixels)[40:40 + 8 * size:8, 120:120 + 8 * size:8]
    return from_array(np.ascontiguousarray(pixels), "chelsea-small")


def test_circular_padding_stride_one_is_exactly_equivariant_for_every_wrapped_shift():
    model = wrapped(conv_net("circular"))
    amounts = list(range(1, 32))
    result = probe(model, photo(), "shift", amounts, boundary="wrap")
    maps = [i for i, name in enumerate(result.layers) if name in ("0", "1", "2", "3")]
    assert len(maps) == 4
    assert np.isfinite(result.equivariance[maps]).all()
    assert np.abs(result.equivariance[maps]).max() <= 1e-5
    pooled = result.layers.index("4")
    assert np.isnan(result.equivariance[pooled]).all()       # a 1x1 map: nothing to move
    assert result.invariance[pooled].min() >= 1 - 1e-5      # wrapped + global pooling: invariant
    assert result.forwards == 32


def test_zero_padding_is_not_equivariant_under_a_wrap_that_the_test_would_catch():
    """The same network with zero padding: the wrapped seam is seen, so the measure can fail."""
    result = probe(wrapped(conv_net("zeros")), photo(), "shift", [5, 11], boundary="wrap")
    assert np.nanmin(result.equivariance[result.layers.index("2")]) > 1e-3


def test_max_pool_map_ignores_moves_inside_its_window_but_the_conv_before_it_does_not():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.ReLU(), nn.MaxPool2d(4, 4))
    with torch.no_grad():
        net[0].weight.abs_()
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[9, 8] = 255                             # one bright pixel at the left of the window x 8..11
    result = probe(wrapped(net), from_array(pixels, "dot"), "shift", [1, 2, 3, 4], boundary="wrap")
    pool, conv = result.layers.index("2"), result.layers.index("0")
    np.testing.assert_allclose(result.map_similarity[pool, :3], 1.0, atol=1e-6)   # the pooled map unchanged
    assert result.map_similarity[pool, 3] < 0.5    # 4 px: into the next window, the pooled map moves
    assert np.all(result.map_similarity[conv] < 0.5)   # the conv's map moves with the pixel ...
    assert np.all(result.equivariance[conv] <= 1e-6)   # ... exactly (it is equivariant, not invariant)
    assert np.isnan(result.equivariance[pool, :3]).all()   # 1-3 px are no whole step of a jump-4 map
    assert result.equivariance[pool, 3] <= 1e-6        # 4 px is one step: the pooled map moves by one
    assert "max pooling 4×4" in result.why("2") and "jump is 4 px" in result.why("2")


def test_flip_is_mirrored_about_each_layers_centre_given_its_start():
    """x-symmetric kernels: stride 1 (start 0.5) and stride 2 with k=4, p=1 (start 1.0, jump 2) both
    mirror exactly; the same layers with lopsided kernels do not."""
    def net(symmetric: bool) -> nn.Module:
        torch.manual_seed(1)
        layers = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 4, stride=2, padding=1))
        if symmetric:
            with torch.no_grad():
                for conv in (layers[0], layers[2]):
                    conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
        return layers
    good = probe(wrapped(net(True)), photo(), "flip")
    bad = probe(wrapped(net(False)), photo(), "flip")
    assert good.amounts == (1.0,)
    assert np.abs(good.equivariance).max() <= 1e-5
    assert bad.equivariance[bad.layers.index("2"), 0] > 0.05


def test_rotation_turns_counter_clockwise_and_an_isotropic_net_follows_it():
    model = wrapped(nn.Conv2d(3, 3, 1, bias=False))
    image = photo()
    inputs = transformed_inputs(model, image, "rotate", [90.0])
    expected = torch.rot90(inputs[:1], 1, dims=(-2, -1))    # counter-clockwise as displayed
    torch.testing.assert_close(inputs[1:], expected, atol=1e-5, rtol=0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    with torch.no_grad():   # a kernel unchanged by 90° turns: corners equal, edges equal
        w = net[0].weight
        w.copy_((w + w.rot90(1, (-2, -1)) + w.rot90(2, (-2, -1)) + w.rot90(3, (-2, -1))) / 4)
    result = probe(wrapped(net), image, "rotate", [90.0, 3.0])
    assert result.equivariance[:, 0].max() <= 1e-5
    assert 0 < result.equivariance[0, 1] < 1   # a small turn resamples the map: close, not exact


def test_model_is_left_as_found():
    net = conv_net("zeros")
    model = wrapped(net)
    net[2].train()
    net[2].weight.requires_grad_(True)
    probe(model, photo(), "shift", [1, 2])
    probe(model, photo(), "scale", [0.9, 1.1])
    assert not has_hooks(net)
    assert net[2].training and not net[0].training and not net.training
    assert net[2].weight.requires_grad and not net[0].weight.requires_grad


def test_bad_requests_are_one_line_value_errors():
    model = wrapped(conv_net("zeros"))
    with pytest.raises(ValueError, match="unknown transform"):
        probe(model, photo(), "shear")
    with pytest.raises(ValueError, match="no layer named"):
        probe(model, photo(), layers=["nope"])
    with pytest.raises(ValueError, match="wrap applies to shifts"):
        probe(model, photo(), "rotate", boundary="wrap")


def test_default_amounts_include_the_deep_jumps():
    assert default_amounts("shift", [1, 2, 4, 8, 16, 32], 224) == (1, 2, 3, 4, 8, 16, 32, 64)
    assert default_amounts("shift", [1], 32) == (1, 2, 3, 4, 5, 6, 7, 8)
    assert default_amounts("flip", [], 224) == (1.0,)


class LeftPixel(nn.Module):
    """Top-1 is class 0 when the crop's top-left pixel is bright, else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 0, 0]
        return torch.stack([v - 0.5, 0.5 - v], dim=1)


def test_consistency_is_zhangs_share_of_agreeing_random_pairs():
    """Zhang 2019 (antialiased-cnns `validate_shift`): the view is crop + 32 px, two 2-D offsets in
    [0, 32)² per pair, agreement of the top-1. Here the top-1 is set by the view's column the crop
    starts at (bright columns 0..15), so each pair's agreement is known from its offsets alone."""
    size, shift = 16, 32
    pixels = np.zeros((size + shift, size + shift, 3), np.uint8)
    pixels[:, :16] = 255
    model = wrap_module(LeftPixel(), "left-pixel", categories=("bright", "dark"),
                        preprocess=Preprocess(resize_size=size + shift, crop_size=size, mean=(0, 0, 0),
                                              std=(1, 1, 1)))
    image = from_array(pixels, "half")
    found = consistency_details(model, [image, image], max_shift=shift, pairs=200, seed=3)
    offsets = np.array(found.offsets)
    assert offsets.shape == (400, 4) and offsets.min() >= 0 and offsets.max() <= shift - 1
    by_hand = np.mean((offsets[:, 1] < 16) == (offsets[:, 3] < 16))   # (y0, x0, y1, x1): the x's decide
    assert found.value == pytest.approx(by_hand, abs=1e-12)
    assert 0.4 < found.value < 0.6           # half the columns are bright: agreement 1/2 on average
    assert found.pairs == 400 and len(found.per_image) == 2
    assert consistency(model, [image], max_shift=shift, pairs=50, seed=3) == consistency(
        model, [image], max_shift=shift, pairs=50, seed=3)           # seeded
    uniform = from_array(np.full_like(pixels, 255), "bright")
    assert consistency(model, [uniform], max_shift=shift, pairs=20) == 1.0


@pytest.fixture(scope="module")
def mobilenet():
    from cnnviewer.engine.models.loading import load_model
    return load_model("mobilenet_v2")


def test_real_mobilenet_v2_on_the_cat(mobilenet):
    cat = sample_image("chelsea")
    result = probe(mobilenet, cat, "shift")
    assert result.amounts == (1, 2, 3, 4, 8, 16, 32, 64)
    first, deep = result.layers.index("features.0.0"), result.layers.index("features.18.2")
    two = result.amounts.index(2)
    assert result.jumps[first] == 2 and result.jumps[deep] == 32
    assert result.equivariance[first, two] <= 1e-5              # its jump: exact in the interior
    assert math.isnan(result.equivariance[first, 0])              # 1 px: no whole step of this map
    # Raw maps of early layers move with the input; deep ones barely change (large fields, small maps):
    assert np.mean(result.map_similarity[deep]) > np.mean(result.map_similarity[first]) + 0.05
    # Globally pooled features are nearly invariant at every depth (global pooling undoes the move).
    assert np.nanmin(result.invariance) > 0.9
    assert result.reference_top1 in range(281, 286) and all(t in range(281, 286) for t in result.top1[:4])
    assert "global pooling" in result.why("classifier.1") and "strides before it" in result.why("features.18.2")
    assert "stride 2" in result.why("features.0.0")
    assert not has_hooks(mobilenet.module)
    assert all(not p.requires_grad for p in mobilenet.module.parameters()) and not mobilenet.module.training
    data = result.to_json()
    assert data["equivariance_error"][first][0] is None and len(data["layers"]) == len(result.layers)


def test_cancel_inside_the_forward_leaves_no_hook():
    import threading

    from cnnviewer.engine.errors import Cancelled

    net = conv_net("zeros")
    cancel, seen = threading.Event(), []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        cancel.set()
    with pytest.raises(Cancelled):
        probe(wrapped(net), photo(), "shift", [1, 2, 3], cancel=cancel, progress=progress, batch=3)
    assert not has_hooks(net) and not net.training
    done = []
    probe(wrapped(net), photo(), "shift", [1, 2, 3], progress=done.append, batch=1)
    assert done == sorted(done) and done[-1] == 1.0 and all(0 <= f <= 1 for f in done)


@pytest.mark.parametrize("transform, amounts", [("scale", [2.0, 1.25, 0.9]), ("rotate", [3.0, -7.0])])
def test_resampled_transforms_commute_with_a_linear_pointwise_layer(transform, amounts):
    """Bilinear resampling commutes with a 1x1 convolution without activation, so the map of the
    rotated / scaled input equals the rotated / scaled map: this checks that the input's warp and the
    map's resampling use one geometry (centre, direction, factor)."""
    torch.manual_seed(0)
    result = probe(wrapped(nn.Sequential(nn.Conv2d(3, 4, 1))), photo(), transform, amounts)
    assert np.isfinite(result.equivariance).all()
    assert result.equivariance.max() <= 1e-5
    nonlinear = probe(wrapped(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())), photo(),
                      transform, amounts)
    assert nonlinear.equivariance.max() > 1e-3       # the same check sees a layer that does not commute
