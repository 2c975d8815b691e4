"""Gradient views against Captum (an independent implementation) and an independent ReLU rewrite."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    IntegratedGradients,
    LayerGradCam,
    Occlusion,
    Saliency,
)
from torch import nn

from cnnviewer.engine.attribution import gradients, methods
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.runtime.hooks import has_hooks


def small_cnn() -> nn.Module:
    """All nn.ReLU modules, none in place: a model on which Captum is correct."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()


@pytest.fixture
def case():
    torch.manual_seed(1)
    return small_cnn(), torch.randn(1, 3, 32, 32), Target(class_index=3)


def close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-7)


def test_saliency_guided_backprop_and_deconvnet_match_captum(case):
    model, x, target = case
    close(gradients.saliency(model, x, target), Saliency(model).attribute(x, target=3, abs=True))
    close(gradients.guided_backprop(model, x, target), GuidedBackprop(model).attribute(x, target=3))
    close(gradients.deconvnet(model, x, target), Deconvolution(model).attribute(x, target=3))


def test_integrated_gradients_and_grad_cam_match_captum(case):
    model, x, target = case
    theirs = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=3, n_steps=50,
                                                  method="gausslegendre")
    torch.testing.assert_close(gradients.integrated_gradients(model, x, target, steps=50), theirs,
                               rtol=1e-5, atol=1e-6)
    cam = LayerGradCam(model, model[6]).attribute(x, target=3, relu_attributions=True)
    close(gradients.grad_cam(model, x, target, "6", upsample=False), cam)


def test_occlusion_matches_captum_and_batches(case):
    model, x, target = case
    ours = gradients.occlusion(model, x, target, patch=8, stride=4, fill="zero", batch=7)
    cover = torch.tensor([(0 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]).view(1, 3, 1, 1)
    theirs = Occlusion(model).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4),
                                        baselines=cover.expand_as(x), target=3)
    close(ours[:, 0], theirs[:, 0])


def test_channel_and_neuron_targets():
    model = small_cnn()
    x = torch.randn(1, 3, 32, 32)
    neuron = gradients.saliency(model, x, Target(layer="3", channel=2, neuron=(4, 5)))
    rows = neuron[0].amax(0).amax(1).nonzero().flatten()
    assert rows.min() >= 4 * 2 - 4 and rows.max() <= 4 * 2 + 10    # inside the neuron's receptive field
    whole = gradients.saliency(model, x, Target(layer="3", channel=2))
    assert (whole[0].amax(0) > 0).sum() > (neuron[0].amax(0) > 0).sum()


def reference_guided(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Independent guided backprop: patch torch.nn.functional.relu itself (what GoogLeNet calls)."""
    original = torch.nn.functional.relu

    class Guided(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value):
            ctx.save_for_backward(value)
            return value.clamp(min=0)

        @staticmethod
        def backward(ctx, grad):
            (value,) = ctx.saved_tensors
            return grad.clamp(min=0) * (value > 0)

    torch.nn.functional.relu = lambda value, inplace=False: Guided.apply(value)
    try:
        x = x.clone().requires_grad_(True)
        model(x)[0, target].backward()
        return x.grad
    finally:
        torch.nn.functional.relu = original


def test_googlenet_functional_relus_are_caught():
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
    x = torch.randn(1, 3, 112, 112)
    flags = [p.requires_grad for p in model.parameters()]
    plain = gradients.input_gradient(model, x, Target(class_index=7))
    guided = gradients.guided_backprop(model, x, Target(class_index=7))
    assert not torch.allclose(guided, plain)                 # the F.relu calls were intercepted
    torch.testing.assert_close(guided, reference_guided(model, x, 7), rtol=1e-4, atol=1e-6)
    assert [p.requires_grad for p in model.parameters()] == flags and not has_hooks(model)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121"])
def test_no_state_left_behind(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        before = model(x)
    flags = [p.requires_grad for p in model.parameters()]
    for method in ("saliency", "guided-backprop", "deconvnet"):
        methods.attribute(method, model, x, Target(class_index=1))
    with pytest.raises(IndexError):                             # a failing target: nothing left either
        gradients.guided_backprop(model, x, Target(class_index=5000))
    with torch.inference_mode():
        assert torch.equal(model(x), before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not has_hooks(model) and not model.training
    if name == "resnet18":
        assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_cancelled_occlusion_leaves_nothing_behind():
    from threading import Event

    model = small_cnn()
    x = torch.randn(1, 3, 32, 32)
    cancel = Event()
    seen = []

    def progress(fraction):
        seen.append(fraction)
        cancel.set()                                      # the user presses Cancel after the first batch

    with pytest.raises(Cancelled):
        gradients.occlusion(model, x, Target(class_index=0), patch=8, stride=2, batch=4, cancel=cancel,
                            progress=progress)
    assert len(seen) == 1 and 0 < seen[0] < 1
    assert not model.training and not has_hooks(model)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("baseline", ["black", "blurred"])
def test_integrated_gradients_baselines_match_captum_and_are_complete(case, baseline):
    """The panel's baselines: Captum on the same start image agrees, and the attributions sum to
    f(x) - f(baseline) (completeness, Sundararajan et al. 2017)."""
    from types import SimpleNamespace

    from cnnviewer.engine.workbench import _baseline

    model, x, target = case
    handle = SimpleNamespace(preprocess=SimpleNamespace(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    start = _baseline(baseline, x, handle)
    assert start.shape == x.shape and not torch.equal(start, torch.zeros_like(x))
    if baseline == "black":
        torch.testing.assert_close(start[0, :, 0, 0], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    ours = gradients.integrated_gradients(model, x, target, baseline=start, steps=64)
    theirs = IntegratedGradients(model).attribute(x, baselines=start, target=3, n_steps=64, method="gausslegendre")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        gap = (model(x) - model(start))[0, 3]
    assert float(ours.sum()) == pytest.approx(float(gap), rel=1e-2, abs=1e-4)
