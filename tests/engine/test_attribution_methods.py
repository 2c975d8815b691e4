"""The six methods of issue 23 against independent implementations, to 1e-4 relative.

Oracles (test-only): Captum 0.9's NoiseTunnel and InputXGradient; pytorch-grad-cam 1.5.7's
GradCAMPlusPlus, LayerCAM, ScoreCAM and EigenCAM, compared at the layer's resolution before their
min-max scaling (their `get_cam_image` on their own recorded activations and gradients, then
np.maximum(., 0), as their `compute_cam_per_layer` does). Models: the real MobileNetV2 (ImageNet
weights) on skimage's chelsea with its top-1 class, and a random-init resnet18 (torchvision,
weights=None, seed 0; partly in training mode and with a frozen parameter, to see both restored).
The oracles run on deep copies: pytorch-grad-cam calls model.eval() and fills parameter grads.
"""

from __future__ import annotations

import copy
import os
from threading import Event

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")   # before the engine reads it

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import (
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from pytorch_grad_cam import EigenCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from skimage import data
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from cnnviewer.engine.attribution import cams, gradients, methods, smoothing
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.media.images import from_array
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.workbench import Workbench

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ORACLES = {"grad-cam++": GradCAMPlusPlus, "layer-cam": LayerCAM, "score-cam": ScoreCAM, "eigen-cam": EigenCAM}
# Score-CAM runs one forward per channel: at MobileNetV2's features.10 (64 channels, 14x14) and resnet18's
# layer1 (64 channels) here; at features.18 (1280 channels) one run takes ~1 min on this machine.
MOBILENET_LAYERS = {"grad-cam++": "features.18", "layer-cam": "features.18", "eigen-cam": "features.18",
                    "score-cam": "features.10"}
RESNET_LAYERS = {"grad-cam++": "layer4", "layer-cam": "layer4", "eigen-cam": "layer4", "score-cam": "layer1"}


@pytest.fixture(scope="module")
def mobilenet():
    model = load_model("mobilenet_v2")
    assert model.trained, "the offline weights pack with MobileNetV2 must be installed"
    image = from_array(data.chelsea(), "chelsea")
    x = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels).tensor
    with torch.inference_mode():
        top = int(model.module(x).argmax())
    assert 281 <= top <= 285      # a cat: the real weights on the real photo
    return model, image, x, top, Workbench()   # one workbench: its model summary is computed once


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    model.layer2.train()                       # mixed modes and a frozen weight: restored exactly
    model.fc.bias.requires_grad_(False)
    return model, torch.randn(1, 3, 96, 96), 7


def state(model: nn.Module) -> tuple:
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [p.grad is None for p in model.parameters()], has_hooks(model))


def evaluated(model: nn.Module) -> nn.Module:
    """A copy in eval mode for Captum, which runs a model in whatever mode it is (ours: always eval)."""
    return copy.deepcopy(model).eval()


def close(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = 1e-4) -> None:
    """Equal to `rtol` relative to the reference's largest magnitude (and not all zero)."""
    theirs = torch.as_tensor(theirs, dtype=torch.float32).detach()
    scale = float(theirs.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours.detach().float(), theirs, rtol=rtol, atol=rtol * scale)


def their_cam(method: str, model: nn.Module, x: torch.Tensor, layer: str, class_index: int) -> np.ndarray:
    """pytorch-grad-cam's layer-resolution map, before scale_cam_image: (N, h, w); Eigen-CAM raw (no ReLU)."""
    model = copy.deepcopy(model).requires_grad_(True)   # the app's model has frozen weights; theirs needs grads
    module = dict(model.named_modules())[layer]
    cam = ORACLES[method](model, [module])
    cam.batch_size = 32
    try:
        targets = [ClassifierOutputTarget(class_index)]
        outputs = cam.activations_and_grads(x)
        if cam.uses_gradients:
            model.zero_grad()
            sum(t(o) for t, o in zip(targets, outputs)).backward()
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy() if cam.uses_gradients else None
        raw = cam.get_cam_image(x, module, targets, activations, grads, False)
    finally:
        cam.activations_and_grads.release()
    if method != "eigen-cam":
        return np.maximum(raw, 0)
    # Our sign rule, stated: the projection correlates positively with the channel-summed activation.
    summed = activations.sum(axis=1)
    correlation = ((summed - summed.mean(axis=(1, 2), keepdims=True)) * raw).sum(axis=(1, 2))
    return np.maximum(raw * np.sign(correlation)[:, None, None], 0)


@pytest.mark.parametrize("method", list(ORACLES))
def test_cams_match_pytorch_grad_cam_on_real_mobilenet_through_the_workbench(mobilenet, method):
    model, image, x, top, workbench = mobilenet
    before = state(model.module)
    layer = MOBILENET_LAYERS[method]
    result = workbench.gradient(model, image, method, Target(class_index=top), layer=layer)
    assert result.options["layer"] == layer and result.attribution.shape == (1, 224, 224)
    theirs = torch.from_numpy(their_cam(method, model.module, x, layer, top)).unsqueeze(1)
    # upsampling is linear, so ours (upsampled inside) equals theirs upsampled the same way
    close(torch.from_numpy(result.attribution)[None], F.interpolate(theirs, size=(224, 224), mode="bilinear"))
    assert state(model.module) == before


@pytest.mark.parametrize("method", list(ORACLES))
def test_cams_match_pytorch_grad_cam_on_random_resnet18(resnet, method):
    model, x, cls = resnet
    before = state(model)
    layer = RESNET_LAYERS[method]
    ours = methods.attribute(method, model, x, Target(class_index=cls), layer=layer, upsample=False) \
        if method == "score-cam" else getattr(cams, {"grad-cam++": "grad_cam_plus_plus", "layer-cam": "layer_cam",
                                                      "eigen-cam": "eigen_cam"}[method])(
            model, x, Target(class_index=cls), layer, upsample=False)
    assert ours.shape[:2] == (1, 1)
    close(ours[:, 0], their_cam(method, model, x, layer, cls))
    assert state(model) == before
    assert [m.training for m in model.modules()].count(True) == len(list(model.layer2.modules()))


def test_layer_targets_follow_score_channel_and_neuron(resnet):
    """Targets at the CAM layer itself have gradients we know: 1 on the channel (channel target),
    one-hot at the neuron (neuron target), so LayerCAM and Grad-CAM++ are closed forms of A_c."""
    model, x, _ = resnet
    with torch.inference_mode():
        recorded = create_feature_extractor(evaluated(model), ["layer2", "layer3"])(x)
    maps = recorded["layer3"][0, 5]
    live = divmod(int(recorded["layer2"][0, 1].argmax()), recorded["layer2"].shape[-1])   # a neuron that fires
    whole, neuron = Target(layer="layer3", channel=5), Target(layer="layer3", channel=5, neuron=(2, 3))
    close(cams.layer_cam(model, x, whole, "layer3", upsample=False)[0, 0], maps.clamp(min=0))
    single = torch.zeros_like(maps)
    single[2, 3] = maps[2, 3]
    close(cams.layer_cam(model, x, neuron, "layer3", upsample=False)[0, 0], single)
    weight = maps.numel() / (2 + float(maps.sum()) + 1e-6)     # Σ_ij α_ij with g = 1: hw / (2 + ΣA)
    close(cams.grad_cam_plus_plus(model, x, whole, "layer3", upsample=False)[0, 0], weight * maps)
    for method in ("score-cam", "eigen-cam", "grad-cam++", "input-x-gradient", "smoothgrad"):
        for target in (whole, neuron, Target(layer="layer2", channel=1, neuron=live)):
            options = {"layer": "layer1"} if method in ORACLES else {"samples": 2} if method == "smoothgrad" else {}
            out = methods.attribute(method, model, x, target, **options)
            assert out.shape[-2:] == (96, 96) and torch.isfinite(out).all() and out.abs().max() > 0
    assert not has_hooks(model)


def test_eigen_cam_ignores_the_target(resnet):
    model, x, _ = resnet
    one = cams.eigen_cam(model, x, Target(class_index=1), "layer4")
    torch.testing.assert_close(one, cams.eigen_cam(model, x, Target(layer="layer3", channel=2), "layer4"))


def test_channels_last_layer_equals_its_channels_first_twin():
    """ConvNeXt-style (N, h, w, C) layer: weighed over its real spatial axes."""
    class Permute(nn.Module):
        def __init__(self, *order: int) -> None:
            super().__init__()
            self.order = order

        def forward(self, x):
            return x.permute(*self.order)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Permute(0, 2, 3, 1), nn.Identity(),
                          Permute(0, 3, 1, 2), nn.Conv2d(8, 6, 3, stride=2), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten()).eval()
    x = torch.randn(1, 3, 20, 20)
    for method in ("grad-cam++", "layer-cam", "eigen-cam", "score-cam"):
        last = methods.attribute(method, model, x, Target(class_index=2), layer="3", channels_last=True)
        first = methods.attribute(method, model, x, Target(class_index=2), layer="1")
        torch.testing.assert_close(last, first)


def test_input_x_gradient_matches_captum(mobilenet, resnet):
    model, _, x, top, _ = mobilenet
    close(methods.attribute("input-x-gradient", model.module, x, Target(class_index=top)),
          InputXGradient(model.module).attribute(x, target=top))
    net, y, cls = resnet
    close(gradients.input_x_gradient(net, y, Target(class_index=cls)),
          InputXGradient(evaluated(net)).attribute(y, target=cls))


def their_smoothgrad(model, x, target, base, sigma, samples, seed, **kwargs):
    method = {"saliency": Saliency, "guided-backprop": GuidedBackprop, "input-x-gradient": InputXGradient,
              "integrated-gradients": IntegratedGradients}[base](evaluated(model))
    torch.manual_seed(seed)
    return NoiseTunnel(method).attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=sigma, target=target,
                                         **kwargs)


@pytest.mark.parametrize("base", ["saliency", "input-x-gradient", "integrated-gradients"])
def test_smoothgrad_matches_captum_noise_tunnel_on_real_mobilenet(mobilenet, base):
    """Guided backprop is compared on resnet18 only: Captum's GuidedBackprop hooks nn.ReLU and misses
    MobileNetV2's ReLU6 (ours catches it; tests/engine/test_gradients.py)."""
    model, image, x, top, workbench = mobilenet
    before, rng = state(model.module), torch.get_rng_state()
    options = {"base": base, "noise": 0.2, "samples": 3, "seed": 5, "batch": 2}
    if base == "integrated-gradients":
        options.update(steps=4, baseline="black")
    result = workbench.gradient(model, image, "smoothgrad", Target(class_index=top), **options)
    assert torch.equal(torch.get_rng_state(), rng) and state(model.module) == before
    sigma = 0.2 * float(x.max() - x.min())
    extra = {}
    if base == "integrated-gradients":
        # black pixels after normalising, in float32 arithmetic (a baseline 1e-7 away moves IG's few-step
        # path across ReLU6 kinks: ~1 % apart on ~1 % of the pixels)
        black = (0 - torch.tensor(model.preprocess.mean)) / torch.tensor(model.preprocess.std)
        black = black.view(1, 3, 1, 1)
        extra = {"baselines": black.expand_as(x), "n_steps": 4, "method": "gausslegendre"}
    theirs = their_smoothgrad(model.module, x, top, base, sigma, 3, 5, **extra)
    close(torch.from_numpy(result.attribution)[None], theirs)


@pytest.mark.parametrize("base", ["guided-backprop", "saliency"])
def test_smoothgrad_matches_captum_on_random_resnet18_and_is_reproducible(resnet, base):
    model, x, cls = resnet
    before = state(model)
    ours = smoothing.smoothgrad(model, x, Target(class_index=cls), base=base, noise=0.1, samples=5, seed=3, batch=2)
    close(ours, their_smoothgrad(model, x, cls, base, 0.1 * float(x.max() - x.min()), 5, 3))
    again = methods.attribute("smoothgrad", model, x, Target(class_index=cls), base=base, noise=0.1, samples=5,
                                seed=3, batch=5)
    torch.testing.assert_close(again, ours, rtol=1e-5, atol=1e-7)      # same seed: same map, any batch size
    other = smoothing.smoothgrad(model, x, Target(class_index=cls), base=base, noise=0.1, samples=5, seed=4)
    assert not torch.allclose(other, ours)
    assert state(model) == before


@pytest.mark.parametrize("method", ["score-cam", "smoothgrad"])
def test_slow_methods_report_progress_and_cancel_cleanly(resnet, method):
    model, x, cls = resnet
    before = state(model)
    seen: list[float] = []
    methods.attribute(method, model, x, Target(class_index=cls), layer="layer1", batch=16, progress=seen.append) \
        if method == "score-cam" else methods.attribute(method, model, x, Target(class_index=cls), samples=6,
                                                          batch=2, progress=seen.append)
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    cancel, calls = Event(), []

    def press(fraction: float) -> None:
        calls.append(fraction)
        cancel.set()                                   # Cancel pressed after the first batch

    options = {"layer": "layer1", "batch": 16} if method == "score-cam" else {"samples": 6, "batch": 2}
    with pytest.raises(Cancelled):
        methods.attribute(method, model, x, Target(class_index=cls), cancel=cancel, progress=press, **options)
    assert len(calls) == 1 and 0 < calls[0] < 1 and state(model) == before


def test_unknown_smoothing_base_is_refused(resnet):
    model, x, cls = resnet
    with pytest.raises(ValueError, match="cannot smooth"):
        smoothing.smoothgrad(model, x, Target(class_index=cls), base="occlusion")


def test_a_model_that_views_its_maps_works_and_is_left_as_found():
    """Score-CAM's batches run channels-last on the CPU (faster convolutions); a LeNet-style
    `x.view(n, -1)` cannot view such maps, so that model is rerun contiguous and gets the same maps."""
    class Viewing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).view(x.shape[0], -1))

    torch.manual_seed(0)
    model, x = Viewing().eval(), torch.randn(1, 3, 8, 8)
    with pytest.raises(RuntimeError):
        model(x.contiguous(memory_format=torch.channels_last))
    for method in ("grad-cam", "grad-cam++", "layer-cam", "eigen-cam", "score-cam"):
        out = methods.attribute(method, model, x, Target(class_index=1), layer="conv", upsample=False)
        assert out.shape == (1, 1, 6, 6) and torch.isfinite(out).all()
    assert model in cams._NEEDS_CONTIGUOUS                  # Score-CAM's batch of 4 masks fell back
    activation = model.conv(x)
    activation.retain_grad()
    model.fc(torch.relu(activation).view(1, -1))[0, 1].backward()
    close(cams.layer_cam(model, x, Target(class_index=1), "conv", upsample=False)[0, 0],
          (activation.grad.clamp(min=0) * activation).sum(1)[0].clamp(min=0))
    assert not has_hooks(model)
