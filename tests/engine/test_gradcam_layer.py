"""Grad-CAM's default layer is the last map before global pooling, and channel-last layers
(ConvNeXt's pointwise Linear) are weighed over their real spatial axes.

torchvision models are built with random initialisation (weights=None): the layer choice
depends on the wiring only.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torchvision

from cnnviewer.engine.attribution.gradients import grad_cam, gradcam_layer
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models.handle import wrap_module
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.structure.summary_graph import summarize
from cnnviewer.engine.workbench import Workbench

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")


pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAST_MAPS = {
    "efficientnet_b0": "features.8.2",
    "mobilenet_v3_large": "features.16.2",
    "regnet_y_400mf": "trunk_output.block4.block4-5.activation",
    "convnext_tiny": "features.7.2",
    "mobilenet_v2": "features.18.2",
    "resnet18": "layer4.1.relu",
}


@pytest.mark.parametrize("family", list(LAST_MAPS))
def test_the_default_layer_is_what_global_pooling_reads(family):
    """Independent check: the chosen layer's output, averaged over H and W, is the pooled vector
    the classifier gets (the avgpool module's output, or for MobileNetV2 the mean of `features`)."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(family, weights=None).eval()
    size = 96
    layer = gradcam_layer(summarize(model, (size, size)), None)
    assert layer == LAST_MAPS[family]
    modules = dict(model.named_modules())
    seen = {}
    handles = [modules[layer].register_forward_hook(lambda _m, _i, out: seen.__setitem__("map", out))]
    pool = modules.get("avgpool") or modules["features"]
    handles.append(pool.register_forward_hook(lambda _m, _i, out: seen.__setitem__("pooled", out)))
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for handle in handles:
        handle.remove()
    pooled = seen["pooled"].mean((2, 3)) if "avgpool" not in modules else seen["pooled"].flatten(1)
    assert seen["map"].dim() == 4 and seen["map"].shape[-1] > 1
    assert torch.allclose(seen["map"].mean((2, 3)), pooled, atol=1e-6)


def test_a_channel_last_layer_is_weighed_over_its_spatial_axes():
    """ConvNeXt's last pointwise Linear outputs (N, H, W, C); its Permute back to (N, C, H, W) is
    an ordinary layer whose Grad-CAM the channel-last one must reproduce."""
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None).eval()
    loaded = wrap_module(model, "convnext_tiny", device="cpu")
    image = sample_image("chelsea")
    bench = Workbench()
    summary = bench.summary(loaded)
    linear, permuted = "features.7.2.block.5", "features.7.2.block.6"
    assert linear in summary.channels_last and permuted not in summary.channels_last
    target = Target(class_index=3)
    channel_last = bench.gradient(loaded, image, "grad-cam", target, layer=linear).attribution
    reference = bench.gradient(loaded, image, "grad-cam", target, layer=permuted).attribution
    assert channel_last.shape == (1, 224, 224) and channel_last.max() > 0
    np.testing.assert_allclose(channel_last, reference, rtol=1e-4, atol=1e-6 * reference.max())
    inputs = torch.randn(1, 3, 64, 64)
    wrong = grad_cam(model, inputs, target, linear, upsample=False)     # averaged over W and C
    right = grad_cam(model, inputs, target, linear, upsample=False, channels_last=True)
    assert wrong.shape != right.shape and right.shape == (1, 1, 2, 2)
    assert not has_hooks(model) and not any(p.requires_grad for p in model.parameters())
