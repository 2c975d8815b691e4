"""Channel importance against Captum's LayerFeatureAblation (one feature per channel) to 1e-5: real
MobileNetV2 on the cat (class and channel targets, zero and mean), a randomly initialised ResNet-18
(random weights: torchvision's, built here, nothing downloaded), the fallbacks for models that cannot
take a batch after the layer, and the model left exactly as found."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import LayerFeatureAblation
from torch import nn

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.experiments.importance import channel_importance
from cnnviewer.engine.models.handle import Preprocess, wrap_module
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input


@pytest.fixture(scope="module")
def mobilenet(one_torch_thread):
    from skimage import data

    from cnnviewer.engine.media.images import from_array
    from cnnviewer.engine.models.loading import load_model

    model = load_model("mobilenet_v2")
    image = from_array(data.chelsea(), "chelsea")
    x = prepare_input(image, model.preprocess, model.device, model.dtype, 3).tensor
    with torch.no_grad():
        top = int(model.module(x).argmax())
    return model, x, top


def captum_drops(module: nn.Module, layer: str, x: torch.Tensor, forward=None, target=None,
                 baselines=None, per_eval: int = 32) -> np.ndarray:
    """Captum's per-channel ablation: feature c = channel c of the layer's output."""
    inner = dict(module.named_modules())[layer]
    with torch.no_grad():
        channels = _output(module, inner, x).shape[1]
    mask = torch.arange(channels).view(1, channels, 1, 1)
    ablation = LayerFeatureAblation(forward or module, inner)
    found = ablation.attribute(x, target=target, layer_mask=mask, layer_baselines=baselines,
                               perturbations_per_eval=per_eval)
    return found[0, :, 0, 0].detach().numpy()


def _output(module: nn.Module, inner: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    with inner.register_forward_hook(lambda _m, _i, out: seen.append(out.clone())):
        module(x)
    return seen[0]


def close(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_mobilenet_class_target_matches_captum(mobilenet):
    model, x, top = mobilenet
    first = dict(model.module.named_modules())["features.0"]
    runs = []
    with first.register_forward_hook(lambda *_: runs.append(1)):
        result = channel_importance(model, x, "features.16.conv.2", Target(class_index=top), batch=32)
    assert top == 285 and result.channels == 160 and result.strategy == "graph"
    assert len(runs) == 3     # the part before the layer: once for all 5 batches (+ the intact pass and the check)
    close(result.drops, captum_drops(model.module, "features.16.conv.2", x, target=top))
    with torch.no_grad():
        assert result.intact == pytest.approx(float(model.module(x)[0, top]), rel=1e-6)
    assert list(result.order[:3]) == list(np.argsort(-result.drops)[:3]) and result.drops[result.order[0]] > 1.0
    assert result.forwards == 1 + 1 + 5 + 1      # intact, the part before the layer, 160 / 32 batches, the check
    assert not has_hooks(model.module)


def test_channel_target_and_mean_mode_match_captum(mobilenet):
    from skimage import data

    from cnnviewer.engine.media.images import from_array
    model, _, _ = mobilenet
    module = model.module       # a 128 px crop of the cat: Captum runs the whole network 2 x 160 times
    x = prepare_input(from_array(data.chelsea(), "chelsea"), Preprocess(resize_size=146, crop_size=128),
                      model.device, model.dtype, 3).tensor
    later = dict(module.named_modules())["features.16"]

    def channel_sum(inputs: torch.Tensor) -> torch.Tensor:   # independent of engine's _score
        seen = []
        with later.register_forward_hook(lambda _m, _i, out: seen.append(out)):
            module(inputs)
        return seen[0][:, 7].sum(dim=(1, 2))

    target = Target(layer="features.16", channel=7)
    zero = channel_importance(model, x, "features.14", target, batch=64)
    close(zero.drops, captum_drops(module, "features.14", x, forward=channel_sum, per_eval=64))
    with torch.no_grad():
        act = _output(module, dict(module.named_modules())["features.14"], x)
    mean = channel_importance(model, x, "features.14", target, mode="mean", batch=64)
    close(mean.drops, captum_drops(module, "features.14", x, forward=channel_sum, per_eval=64,
                                   baselines=act.mean(dim=(2, 3), keepdim=True)))
    assert not np.allclose(zero.drops, mean.drops)
    assert zero.target == "features.16 channel 7" and mean.to_json()["mode"] == "mean"


def test_random_resnet18_in_place_skip_add_matches_captum(one_torch_thread):
    torch.manual_seed(0)
    module = torchvision.models.resnet18(weights=None)      # random weights: no download
    model = wrap_module(module, "resnet18", device="cpu", preprocess=Preprocess(resize_size=96, crop_size=96))
    x = torch.randn(1, 3, 96, 96)
    module.layer1.train()                                   # flags the run must give back
    module.fc.weight.requires_grad_(True)
    result = channel_importance(model, x, "layer2.0.conv2", Target(class_index=3), batch=48)
    assert result.strategy == "graph"         # `out += identity`: the batch adds a batch-1 skip in place
    module.layer1.eval()
    close(result.drops, captum_drops(module, "layer2.0.conv2", x, target=3, per_eval=64))
    module.layer1.train()
    result = channel_importance(model, x, "layer2.0.bn1", Target(class_index=3), batch=48)   # ReLU in place after
    module.layer1.eval()
    close(result.drops, captum_drops(module, "layer2.0.bn1", x, target=3, per_eval=64))
    module.layer1.train()
    assert not has_hooks(module) and module.fc.weight.requires_grad and not module.fc.bias.requires_grad
    assert all(m.training for m in module.layer1.modules()) and not module.layer2.training


class Concat(nn.Module):
    """cat of a batch-1 skip with the layer's output: only a batch of whole inputs works."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        s = self.stem(x)
        return self.head(torch.cat([s, self.body(s)], dim=1).mean(dim=(2, 3)))


class Mixing(Concat):
    """Batch items interact (a batch statistic): only one input at a time is right."""

    def forward(self, x):
        s = self.stem(x)
        b = self.body(s)
        return self.head(torch.cat([s, b - b.mean(dim=0, keepdim=True) + b.detach()[:1]], dim=1).mean(dim=(2, 3)))


class Untraceable(nn.Module):
    """A data-dependent branch: torch.fx cannot trace it, so the hook hands the rest the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        s = self.stem(x)
        b = self.body(s) + s          # the batch-1 skip broadcasts against the batch
        if b.mean() > -1e9:
            b = b.relu()
        return self.head(b.mean(dim=(2, 3)))


@pytest.mark.parametrize("kind, strategy", [(Untraceable, "suffix"), (Concat, "inputs"), (Mixing, "single")])
def test_models_that_cannot_take_the_batch_fall_back(kind, strategy, one_torch_thread):
    torch.manual_seed(0)
    model = wrap_module(kind(), kind.__name__, device="cpu")
    x = torch.randn(1, 3, 12, 12)
    result = channel_importance(model, x, "body", Target(class_index=1), batch=4)
    assert result.strategy == strategy
    close(result.drops, captum_drops(model.module, "body", x, target=1, per_eval=1))
    assert np.abs(result.drops).max() > 1e-3 and not has_hooks(model.module)
    if kind is Untraceable:
        with pytest.raises(ValueError, match="cannot trace"):
            channel_importance(model, x, "body", Target(class_index=1), strategy="graph")


def test_cancel_progress_and_refusals(mobilenet):
    model, x, top = mobilenet
    seen: list[float] = []
    result = channel_importance(model, x, "features.17.conv.2", Target(class_index=top), batch=100,
                                progress=seen.append)
    assert seen == [100 / 320, 200 / 320, 300 / 320, 1.0] and result.to_json()["channels"] == 320
    hooked = channel_importance(model, x, "features.17.conv.2", Target(class_index=top), batch=100, strategy="suffix")
    assert hooked.strategy == "suffix" and hooked.forwards == 1 + 4 + 1 and result.forwards == 1 + 1 + 4 + 1
    close(hooked.drops, result.drops)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        channel_importance(model, x, "features.14", Target(class_index=top), cancel=cancel)
    with pytest.raises(ValueError, match="computed before"):
        channel_importance(model, x, "features.16", Target(layer="features.14", channel=0))
    with pytest.raises(ValueError, match="no layer"):
        channel_importance(model, x, "features.99", Target(class_index=top))
    with pytest.raises(ValueError, match="mode"):
        channel_importance(model, x, "features.14", Target(class_index=top), mode="scale")
    assert not has_hooks(model.module)
    import dataclasses
    scripted = dataclasses.replace(model, module=torch.jit.trace(model.module, x))   # hooks unsupported there
    with pytest.raises(ValueError, match="TorchScript"):
        channel_importance(scripted, x, "features.14", Target(class_index=top))
