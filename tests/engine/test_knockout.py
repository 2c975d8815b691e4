"""Knock-outs (issue 24): the intervened model computes what an independent edit of a deep copy
computes (weights zeroed or scaled; a forward hook for means), every view sees it, and the user's
module is left exactly as found. Real ImageNet MobileNetV2; ResNet-18 with random weights (its
in-place ReLU and `out += identity`)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.experiments.knockout import (
    AblationError,
    Knockout,
    channel_means,
    folder_channel_means,
    intervene,
    parse_ablation,
    resolve_means,
)
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models.catalogue import load_torchvision_model
from cnnviewer.engine.models.handle import LoadedModel, wrap_module
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.runtime.recording import capture_activations
from cnnviewer.engine.structure.summary_graph import summarize
from cnnviewer.engine.workbench import Workbench

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mobilenet() -> LoadedModel:
    model = load_torchvision_model("mobilenet_v2", device="cpu")
    assert model.trained, "the offline weights pack with MobileNetV2 must be installed"
    return model


@pytest.fixture(scope="module")
def cat(mobilenet: LoadedModel) -> torch.Tensor:
    return prepare_input(sample_image("chelsea"), mobilenet.preprocess, mobilenet.device).tensor


def state(module: nn.Module) -> tuple:
    """Everything `intervene` must not change: weights, modes, requires_grad, hooks, children."""
    return ({k: v.clone() for k, v in module.state_dict().items()},
            [m.training for m in module.modules()], [p.requires_grad for p in module.parameters()],
            has_hooks(module), [(n, type(m)) for n, m in module.named_modules()])


def same_state(a: tuple, b: tuple) -> bool:
    return (a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
            and a[1:] == b[1:])


def test_zero_and_scale_equal_edited_weights_and_leave_the_model_as_found(mobilenet, cat):
    """Zeroing (scaling) output channels of a bias-free conv equals zeroing (scaling) their filters."""
    before = state(mobilenet.module)
    with torch.no_grad():
        intact = mobilenet.module(cat)
    knocked = intervene(mobilenet, [Knockout("features.14.conv.0.0", (3, 7, 100)),
                                    Knockout("features.4.conv.1.0", (5,), "scale", factor=0.25)])
    oracle = copy.deepcopy(mobilenet.module)
    with torch.no_grad():
        oracle.get_submodule("features.14.conv.0.0").weight[[3, 7, 100]] = 0
        oracle.get_submodule("features.4.conv.1.0").weight[5] *= 0.25
        expected, got = oracle(cat), knocked.module(cat)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got - intact).abs().max() > 1e-2
    assert knocked.token != mobilenet.token and knocked.intact is mobilenet and knocked.original is mobilenet
    assert knocked.layer_names == mobilenet.layer_names and knocked.layer_types == mobilenet.layer_types
    assert (knocked.name, knocked.categories, knocked.preprocess) == (mobilenet.name, mobilenet.categories,
                                                                      mobilenet.preprocess)
    assert len(knocked.interventions) == 2 and "with 2 knock-outs" in knocked.title
    # parameters are shared, not duplicated
    assert knocked.module.get_submodule("features.14.conv.0.0").weight is \
        mobilenet.module.get_submodule("features.14.conv.0.0").weight
    del knocked
    assert same_state(before, state(mobilenet.module))
    with torch.no_grad():
        assert torch.equal(mobilenet.module(cat), intact)


def test_mean_matches_a_hooked_deep_copy_and_channel_means(mobilenet, cat):
    """'mean' makes each channel the constant given: checked against a forward hook on a deep copy."""
    layer, channels = "features.10.conv.1", (0, 9)
    means = channel_means(mobilenet, cat, layer, channels)
    _, recorded = capture_activations(mobilenet.module, cat)
    manual = recorded[layer][0, list(channels)].mean(dim=(1, 2))
    np.testing.assert_allclose(means, manual.numpy(), rtol=1e-6)
    knocked = intervene(mobilenet, [Knockout(layer, channels, "mean", means=means, source="this image")])
    oracle = copy.deepcopy(mobilenet.module)

    def replace(_module, _args, output):
        output = output.clone()
        for c, m in zip(channels, means):
            output[:, c] = m
        return output

    oracle.get_submodule(layer).register_forward_hook(replace)
    with torch.no_grad():
        torch.testing.assert_close(knocked.module(cat), oracle(cat), rtol=1e-5, atol=1e-5)
    resolved = resolve_means(mobilenet, cat, [parse_ablation(f"{layer}:0,9:mean")])
    assert resolved[0].means == means
    _, seen = capture_activations(knocked.module, cat)     # the recorder sees the constant channels
    assert torch.allclose(seen[layer][0, 9], torch.full_like(seen[layer][0, 9], means[1]))


def test_every_view_sees_the_intervention(mobilenet):
    """Feature maps downstream change (upstream do not), the block knocked out is zero, receptive
    fields are the same, and gradients explain the intervened model, leaving both unchanged."""
    image = sample_image("chelsea")
    knocked = intervene(mobilenet, [Knockout("features.14", tuple(range(0, 160, 2)))])
    bench = Workbench()
    a, b = bench.cache.get(mobilenet, image), bench.cache.get(knocked, image)
    assert torch.equal(a.activations["features.13"], b.activations["features.13"])
    assert b.activations["features.14"][0::2].abs().max() == 0
    assert not torch.allclose(a.activations["features.16"], b.activations["features.16"])
    fields = [{k: (f.size, f.jump, f.start, f.whole) for k, f in summarize(m.module, (224, 224)).fields.items()}
              for m in (mobilenet, knocked)]
    assert fields[0] == fields[1]
    target = Target(class_index=285)
    first = bench.gradient(mobilenet, image, "saliency", target).attribution
    changed = bench.gradient(knocked, image, "saliency", target).attribution
    assert np.abs(first - changed).max() > 1e-3 * np.abs(first).max()
    np.testing.assert_array_equal(bench.gradient(mobilenet, image, "saliency", target).attribution, first)
    np.testing.assert_array_equal(bench.gradient(knocked, image, "saliency", target).attribution, changed)
    cam = bench.gradient(knocked, image, "grad-cam", target, layer="features.16")
    assert np.isfinite(cam.attribution).all() and not has_hooks(mobilenet.module) and not has_hooks(knocked.module)


def test_resnet_in_place_relu_and_residual_add():
    """Random-init ResNet-18: knocking out a BatchNorm before `out += identity` equals zeroing its
    affine parameters and running statistics' effect (weight and bias 0)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    model = wrap_module(net, "resnet18")
    x = torch.randn(2, 3, 224, 224)
    before = state(model.module)
    knocked = intervene(model, [Knockout("layer1.0.bn2", (1, 2, 60))])
    oracle = copy.deepcopy(model.module)
    with torch.no_grad():
        bn = oracle.get_submodule("layer1.0.bn2")
        bn.weight[[1, 2, 60]] = 0
        bn.bias[[1, 2, 60]] = 0
        torch.testing.assert_close(knocked.module(x), oracle(x), rtol=1e-5, atol=1e-5)
    _, traced = capture_activations(knocked.module, x)
    assert traced["layer1.0.bn2"][:, [1, 2, 60]].abs().max() == 0
    assert same_state(before, state(model.module))
    with pytest.raises(AblationError, match="runs 2 times"):     # one relu module used twice per block
        intervene(model, [Knockout("layer1.0.relu", (0,))])
    assert same_state(before, state(model.module))


def test_composition_copies_and_errors(mobilenet, cat):
    one = intervene(mobilenet, [Knockout("features.3", (1,))])
    two = intervene(one, [Knockout("features.3", (1,), "scale", factor=2.0), Knockout("classifier.1", (285,))])
    assert two.intact is mobilenet and len(two.interventions) == 3
    assert intervene(mobilenet, []) is mobilenet and intervene(two.intact, []) is mobilenet
    with torch.no_grad():
        logits = two.module(cat)
        assert logits[0, 285] == 0
        torch.testing.assert_close(copy.deepcopy(two.module)(cat), logits)   # the sanity check's copies
    traced = torch.fx.symbolic_trace(two.module)
    with torch.no_grad():
        torch.testing.assert_close(traced(cat), logits)
    with pytest.raises(AblationError, match="no layer 'features.99'"):
        intervene(mobilenet, [Knockout("features.99", (1,))])
    with pytest.raises(AblationError, match="has 24 channels .*channel 24 is out of range"):
        intervene(mobilenet, [Knockout("features.3", (24,))])
    with pytest.raises(AblationError):
        channel_means(mobilenet, cat, "features.3", (30,))
    scripted = wrap_module(torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())), "scripted")
    with pytest.raises(AblationError, match="TorchScript"):
        intervene(scripted, [Knockout("0", (1,))])


@pytest.mark.parametrize("text, expected", [
    ("features.14.conv.0:3,7", Knockout("features.14.conv.0", (3, 7))),
    ("features.3:1-3,1:zero", Knockout("features.3", (1, 2, 3))),
    ("layer4.1: 5 :scale=0.5", Knockout("layer4.1", (5,), "scale", factor=0.5)),
    ("fc:0:mean", Knockout("fc", (0,), "mean", means=(0.0,), source="this image")),
])
def test_parse_ablation(text, expected):
    assert parse_ablation(text) == expected


@pytest.mark.parametrize("text", ["features.3", "features.3:", ":1", "features.3:a", "features.3:1:half",
                                  "features.3:1:scale=x", "features.3:-1", "a:1:zero:extra", "f:3-1",
                                  "f:1:scale=nan"])
def test_parse_ablation_errors_are_one_line(text):
    with pytest.raises(AblationError) as error:
        parse_ablation(text)
    assert "\n" not in str(error.value)


def test_describe():
    assert Knockout("features.14.conv.0", (3, 7)).describe() == "features.14.conv.0 ch 3,7: zero"
    assert Knockout("a", (1,), "scale", factor=0.5).describe() == "a ch 1: scale ×0.5"
    assert Knockout("a", tuple(range(10)), "mean", means=(0.0,) * 10, source="folder x/ (3 images)").describe() \
        == "a ch 10 (0,1,2,…): mean over folder x/ (3 images)"


class FakeIndex:
    """The two DatasetIndex calls folder_channel_means makes, over a known array."""

    def __init__(self, folder: str) -> None:
        self.folder, self.layers, self.valid_rows = folder, ["features.3"], np.array([0, 2])
        self.means = np.array([[1.0, 2.0, 3.0], [100.0, 100.0, 100.0], [3.0, 4.0, 5.0]], dtype=np.float32)

    def array(self, layer: str, kind: str) -> np.ndarray:
        assert (layer, kind) == ("features.3", "mean")
        return self.means


def test_folder_means_average_the_valid_rows(tmp_path):
    means, source = folder_channel_means(FakeIndex(str(tmp_path / "photos")), "features.3", (2, 0))
    assert means == (4.0, 2.0) and source == "folder photos/ (2 images)"
    with pytest.raises(AblationError, match="not indexed"):
        folder_channel_means(FakeIndex(str(tmp_path)), "features.4", (0,))
