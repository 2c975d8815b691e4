"""Receptive fields of modern CNN blocks (squeeze-and-excitation gates, channel-last ConvNeXt
blocks, layer scale, stochastic depth) checked against the input gradient of a centre neuron.

torchvision models are built with random initialisation (weights=None): the check needs no
trained weights, only the wiring. As in test_summary, every weight is made positive and the
input is all ones, so no ReLU cuts a path and nothing cancels: the non-zero input gradient marks
exactly the theoretical field, clipped to the image.

Squeeze-and-excitation gates are held fixed (every 1x1 map is detached) while measuring: a gate
is computed from the whole map, so through it every pixel nudges every later neuron, which the
field reports as `context` rather than widening to "whole image" (see field_flow).
"""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch import nn

from cnnviewer.engine.structure.summary_graph import summarize
from tests.engine.test_summary import positive

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Stop(Exception):
    """Nothing after the measured layer needs computing."""


def gradient_support(model: nn.Module, layer: str, size: int) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """(top, left, bottom, right) of the input pixels whose gradient reaches the centre neuron
    of `layer`, with every 1x1 map (gates, pooled vectors) held fixed; and that neuron (y, x)."""
    recorded = {}

    def hold(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2:] == (1, 1):
            return output.detach()
        return None

    def grab(_module, _inputs, output):
        recorded["out"] = output
        raise _Stop

    handles = [module.register_forward_hook(hold) for module in model.modules()]
    handles.append(dict(model.named_modules())[layer].register_forward_hook(grab))
    image = torch.ones(1, 3, size, size, requires_grad=True)
    try:
        model(image)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    output = recorded["out"]
    y, x = output.shape[-2] // 2, output.shape[-1] // 2
    output[0, :, y, x].sum().backward()
    reached = image.grad[0].abs().sum(0)
    rows, cols = reached.sum(1).nonzero().flatten(), reached.sum(0).nonzero().flatten()
    return (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1), (y, x)


# family -> (input side, {layer: theoretical size}), early to late; the late layers need a larger
# input for their field to fit inside it, so they are a second case.
FAMILIES = {
    ("efficientnet_b0", "early"): (160, {"features.2": 19, "features.3.1": 67, "features.4": 147}),
    ("efficientnet_b0", "late"): (416, {"features.5": 339}),
    ("mobilenet_v3_large", "early"): (160, {"features.3": 19, "features.6": 99, "features.8": 147}),
    ("mobilenet_v3_large", "late"): (352, {"features.12": 275}),
    ("regnet_y_400mf", "early"): (160, {"trunk_output.block1": 7, "trunk_output.block2": 47,
                                        "trunk_output.block3.block3-2": 127}),
    ("regnet_y_400mf", "late"): (320, {"trunk_output.block3": 223, "trunk_output.block4.block4-0": 255}),
    ("convnext_tiny", "early"): (128, {"features.1.0": 28, "features.1": 76, "features.2": 80}),
    ("convnext_tiny", "late"): (352, {"features.5.0": 328}),
}


@pytest.mark.parametrize(("family", "depth"), list(FAMILIES))
def test_fields_of_modern_families_equal_the_gradient_support(family, depth):
    size, layers = FAMILIES[family, depth]
    torch.manual_seed(0)
    model = positive(getattr(torchvision.models, family)(weights=None))
    summary = summarize(model, (size, size))
    for layer, expected in layers.items():
        field = summary.field(layer)
        assert not field.whole and field.size == (expected, expected), layer
        measured, (y, x) = gradient_support(model, layer, size)
        top, left, bottom, right = field.box(y, x)
        assert 0 < top and bottom < size, f"{layer}: the field must fit inside the input to be tested"
        assert measured == (top, left, bottom, right), layer
    if depth == "early":
        last = summary.final_map
        assert not summary.field(last).whole and summary.field(last).size[0] > size   # the late maps see it all
        assert gradient_support(model, last, size)[0] == (0, 0, size, size)


def shift_rows(x: torch.Tensor) -> torch.Tensor:
    """A function fx keeps whole (wrapped below), like torchvision's swin window attention."""
    return torch.roll(x, 1, dims=2)


torch.fx.wrap("shift_rows")


def test_products_over_positions_and_opaque_functions_see_the_whole_image():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.after_matmul = nn.Conv2d(4, 4, 1)
            self.after_opaque = nn.Conv2d(4, 4, 1)
            self.after_gelu = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            x = self.conv(x)
            mixed = self.after_matmul(x @ x.transpose(2, 3))        # every row meets every column
            return mixed, self.after_opaque(shift_rows(x)), self.after_gelu(torch.nn.functional.gelu(x))

    summary = summarize(Net(), (16, 16))
    assert summary.row("after_matmul").rf_whole and summary.row("after_opaque").rf_whole
    assert summary.row("after_gelu").rf_size == (3.0, 3.0) and not summary.row("after_gelu").rf_whole


def test_a_gate_by_broadcast_keeps_the_field_and_a_spatial_mix_does_not():
    """Built from plain operations, no library module: a gate computed by a mean over H and W,
    a channel-last Linear (a 1x1 convolution), and a Linear across W (which mixes positions)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.pointwise = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)
            self.conv2 = nn.Conv2d(8, 8, 3)
            self.across = nn.Linear(28, 28)
            self.scale = nn.Parameter(torch.ones(8, 1, 1))

        def forward(self, x):
            x = self.conv(x)
            x = x * torch.sigmoid(x.mean((2, 3), keepdim=True))               # 1x1 gate
            x = self.norm(self.pointwise(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
            x = x - x.mean(1, keepdim=True)                                    # over channels only
            y = self.conv2(self.scale * x)
            return y, self.across(y)

    summary = summarize(Net(), (32, 32))
    assert summary.row("pointwise").rf_size == (3.0, 3.0) and not summary.row("pointwise").rf_whole
    assert summary.row("norm").rf_size == (3.0, 3.0) and summary.row("norm").rf_context
    assert summary.row("conv2").rf_size == (5.0, 5.0) and not summary.row("conv2").rf_whole
    assert summary.row("across").rf_whole
    assert {"pointwise", "norm"} <= summary.channels_last and "conv2" not in summary.channels_last
    plain = summarize(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)), (16, 16))
    assert not plain.row("1").rf_context                                    # no gate, no context


@pytest.mark.parametrize(("name", "size", "layers"), [
    ("efficientnet_b0", 160, {"blocks.1": 19, "blocks.2": 67, "blocks.3": 147}),
    ("convnext_atto", 128, {"stages.0": 52, "stages.1.blocks.0": 104}),
])
def test_timm_blocks_keep_their_fields(name, size, layers):
    """timm's own SqueezeExcite, channel-last ConvNeXt blocks (x.mul(gamma), DropPath), random weights."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = positive(timm.create_model(name, pretrained=False))
    summary = summarize(model, (size, size))
    for layer, expected in layers.items():
        field = summary.field(layer)
        assert field.size == (expected, expected) and not field.whole, layer
        measured, (y, x) = gradient_support(model, layer, size)
        assert measured == field.box(y, x), layer


def test_untraceable_gated_models_continue_after_the_gate():
    """The forward-hook fallback composes fields as a chain: the gate's 1x1 branch must not end it."""

    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Conv2d(4, 4, 1)
            self.conv2 = nn.Conv2d(4, 4, 3)

        def forward(self, x):
            if x.sum() > 0:          # data-dependent: torch.fx cannot trace this
                x = -x
            x = self.conv(x)
            return self.conv2(x * torch.sigmoid(self.fc(self.pool(x))))

    summary = summarize(Gated(), (16, 16))
    assert summary.method.startswith("forward hooks")
    assert summary.row("pool").rf_whole and summary.row("fc").rf_whole
    conv2 = summary.row("conv2")
    assert conv2.rf_size == (5.0, 5.0) and not conv2.rf_whole and conv2.rf_context
    assert summary.field("conv2").context
