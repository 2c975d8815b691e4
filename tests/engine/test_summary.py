"""Model summary: counts from the lecture notes, MACs, and receptive fields checked by gradients."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch import nn

from cnnviewer.engine.structure.summary_graph import summarize

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")


def lecture_network() -> nn.Sequential:
    """The notes' exercise: 256x256x3 -> conv16 K4 -> pool4 -> conv32 K4 -> pool4 -> FC 10 -> softmax."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 4, padding="same"), nn.MaxPool2d(4, 4),
        nn.Conv2d(16, 32, 4, padding="same"), nn.MaxPool2d(4, 4),
        nn.Flatten(), nn.Linear(8192, 10), nn.Softmax(dim=1))


def test_weights_and_neurons_of_the_lecture_exercise():
    summary = summarize(lecture_network(), (256, 256))
    units = [row.units for row in summary.rows]
    weights = [row.params for row in summary.rows]
    biases = [row.bias_params for row in summary.rows]
    assert units == [256 * 256 * 16, 64 * 64 * 16, 64 * 64 * 32, 16 * 16 * 32, 8192, 10, 10]
    assert weights == [4 * 4 * 3 * 16, 0, 4 * 4 * 16 * 32, 0, 0, 8192 * 10, 0]
    assert biases == [16, 0, 32, 0, 0, 10, 0]
    assert summary.total_params == sum(weights) + sum(biases)
    assert summary.method == "torch.fx"


def test_bottleneck_costs_what_the_notes_say():
    size = 14
    plain = nn.Conv2d(256, 256, 3, padding=1, bias=False)
    bottleneck = nn.Sequential(nn.Conv2d(256, 64, 1, bias=False), nn.Conv2d(64, 64, 3, padding=1, bias=False),
                               nn.Conv2d(64, 256, 1, bias=False))
    plain_macs = summarize(nn.Sequential(plain), (size, size)).total_macs
    bottleneck_macs = summarize(bottleneck, (size, size)).total_macs
    assert plain_macs == size * size * 3 * 3 * 256 * 256          # W·H·590K
    assert bottleneck_macs == size * size * (256 * 64 + 9 * 64 * 64 + 64 * 256)   # W·H·70K
    assert round(plain_macs / size ** 2 / 1000) == 590 and round(bottleneck_macs / size ** 2 / 1000) == 70


def test_resnet18_totals():
    summary = summarize(torchvision.models.resnet18(weights=None))
    assert summary.total_params == 11_689_512
    assert summary.total_macs == pytest.approx(1.814e9, rel=1e-3)
    assert len({row.name for row in summary.rows}) == len(summary.rows)   # shared ReLUs listed once
    assert summary.row("fc").rf_whole and summary.row("avgpool").rf_whole
    assert not summary.row("layer4.1.conv2").rf_whole


def gradient_box(model: nn.Module, layer: str, size: int) -> tuple[int, int, int, int, tuple[int, int]]:
    """Independent check: the input pixels that reach the centre neuron of `layer`.

    With every weight positive and ReLUs fed positive values nothing cancels,
    so the non-zero gradient marks exactly the receptive field (clipped to the image).
    """
    recorded = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, output: recorded.setdefault("out", output))
    image = torch.ones(1, 3, size, size, requires_grad=True)
    try:
        model(image)
    finally:
        handle.remove()
    output = recorded["out"]
    y, x = output.shape[-2] // 2, output.shape[-1] // 2
    output[0, :, y, x].sum().backward()
    rows = image.grad[0].abs().sum(0).sum(1).nonzero().flatten()
    cols = image.grad[0].abs().sum(0).sum(0).nonzero().flatten()
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1, (y, x)


def positive(model: nn.Module) -> nn.Module:
    """All-positive weights; max pooling replaced by average pooling of the same window
    (same receptive field, but every input in the window gets gradient)."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.abs_().add_(1e-3)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(module, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    return model.eval()


@pytest.mark.parametrize(("builder", "layer", "size"), [
    (lambda: torchvision.models.resnet18(weights=None), "layer2", 256),
    (lambda: torchvision.models.resnet18(weights=None), "layer1.1.conv2", 160),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                           nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, dilation=2, padding=2), nn.ReLU()), "4", 64),
    (lambda: torchvision.models.vgg11(weights=None).features, "10", 128),
])
def test_receptive_field_matches_the_gradient(builder, layer, size):
    model = positive(builder())
    top, left, bottom, right, (y, x) = gradient_box(model, layer, size)
    theory = summarize(model, (size, size)).field(layer).box(y, x)
    clipped = (max(theory[0], 0), max(theory[1], 0), min(theory[2], size), min(theory[3], size))
    assert (top, left, bottom, right) == clipped


def test_two_3x3_convs_see_5x5_and_global_pooling_sees_all():
    summary = summarize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1)), (32, 32))
    assert summary.rows[1].rf_size == (5.0, 5.0) and summary.rows[1].rf_jump == (1.0, 1.0)
    assert summary.rows[2].rf_whole


def test_untraceable_models_fall_back_to_hooks():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            if x.sum() > 0:          # data-dependent: torch.fx cannot trace this
                x = -x
            return self.pool(self.conv(x))

    summary = summarize(Branchy(), (16, 16))
    assert summary.method.startswith("forward hooks")
    assert [row.name for row in summary.rows] == ["conv", "pool"]
    assert summary.rows[1].rf_size == (4.0, 4.0)


def test_transposed_convolution_fields_match_the_gradient():
    model = positive(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
                                   nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
                                   nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1)))
    size = 64
    top, left, bottom, right, (y, x) = gradient_box(model, "4", size)
    field = summarize(model, (size, size)).field("4")
    assert field.jump == (2.0, 2.0)                      # upsampling halves the jump
    theory = field.box(y, x)
    # A transposed conv with k=4, s=2 reads 2 input positions for some outputs, 1.5 on
    # average in the formula: the field is the bound over positions, so it contains the
    # measured one and exceeds it by less than one input step (4 px here).
    assert theory[0] <= top and theory[1] <= left and bottom <= theory[2] and right <= theory[3]
    assert (theory[2] - theory[0]) - (bottom - top) < 4
