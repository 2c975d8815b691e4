"""Recording every module's output: shapes, in-place safety, no hooks left, caching."""

from __future__ import annotations

import os

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")   # before the engine reads it

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cnnviewer.engine.media.images import from_array, sample_image
from cnnviewer.engine.models.catalogue import load_torchvision_model
from cnnviewer.engine.models.handle import LoadedModel, wrap_module
from cnnviewer.engine.runtime import hooks, inference
from cnnviewer.engine.runtime.hooks import capture_with_hooks, has_hooks
from cnnviewer.engine.runtime.inference import ActivationCache, run_forward, top_k
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.runtime.recording import capture_activations

CATS = range(281, 286)   # ImageNet: tabby .. Egyptian cat
ESPRESSO = 967


def random_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name == "googlenet" else {}
    return torchvision.models.get_model(name, weights=None, **kwargs).eval()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return random_model("resnet18")


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(1, 3, 224, 224)


@pytest.fixture(scope="module")
def mobilenet() -> LoadedModel:
    model = load_torchvision_model("mobilenet_v2", device="cpu")
    assert model.trained, "the offline weights pack with MobileNetV2 must be installed"
    return model


# --------------------------------------------------------------------------- shapes

EXPECTED_SHAPES = {
    "resnet18": {"conv1": (1, 64, 112, 112), "maxpool": (1, 64, 56, 56),
                 "layer4": (1, 512, 7, 7), "avgpool": (1, 512, 1, 1), "fc": (1, 1000)},
    "mobilenet_v2": {"features.0": (1, 32, 112, 112), "features.18": (1, 1280, 7, 7),
                     "classifier.1": (1, 1000)},
    "squeezenet1_0": {"features.0": (1, 96, 109, 109), "features.12": (1, 512, 13, 13),
                      "classifier": (1, 1000, 1, 1)},
    "googlenet": {"conv1": (1, 64, 112, 112), "inception5b": (1, 1024, 7, 7), "fc": (1, 1000)},
    "shufflenet_v2_x0_5": {"conv1": (1, 24, 112, 112), "stage4": (1, 192, 7, 7),
                           "conv5": (1, 1024, 7, 7), "fc": (1, 1000)},
}


@pytest.mark.parametrize("name", list(EXPECTED_SHAPES))
def test_capture_records_every_module_with_its_shape(name: str, batch: torch.Tensor) -> None:
    model = random_model(name)
    with torch.inference_mode():
        plain = model(batch)

    output, recorded = capture_activations(model, batch)

    for layer, shape in EXPECTED_SHAPES[name].items():
        assert tuple(recorded[layer].shape) == shape, layer
    assert torch.equal(output, plain)
    assert torch.equal(recorded[""], plain)               # the root is recorded as ''
    names = set(dict(model.named_modules()))
    assert set(recorded) <= names
    assert not has_hooks(model)
    if name == "googlenet":                                 # auxiliary heads do not run in eval
        assert "aux1" not in recorded and "aux2" not in recorded


def test_run_forward_drops_batch_dimension_and_lists_layers(resnet18: nn.Module) -> None:
    loaded = wrap_module(resnet18, "resnet18", device="cpu")
    image = from_array(np.full((300, 400, 3), 128, dtype=np.uint8), "gray")

    result = run_forward(loaded, image)

    assert result.display.shape == (224, 224, 3) and result.display.dtype == np.uint8
    assert result.probabilities.shape == (1000,)
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    assert tuple(result.activations["layer1"].shape) == (64, 56, 56)
    assert tuple(result.activations["fc"].shape) == (1000,)
    infos = {info.name: info for info in result.layers}
    assert infos["layer1.0.conv1"].output_shape == (64, 56, 56)
    assert infos["layer1.0.conv1"].type_name == "Conv2d"
    assert infos["layer1.0.conv1"].depth == 3
    assert infos[""].depth == 0
    assert [info.name for info in result.layers] == list(loaded.layer_names)


# --------------------------------------------------------------------------- in-place safety

def test_inplace_relu_does_not_overwrite_recorded_batchnorm(resnet18: nn.Module,
                                                            batch: torch.Tensor) -> None:
    for _ in range(2):   # the probing first call and the cloning later ones
        _, recorded = capture_activations(resnet18, batch)

        assert recorded["bn1"].min() < 0
        assert recorded["relu"].min() >= 0
        assert torch.equal(recorded["relu"], recorded["bn1"].clamp(min=0))


def test_block_outputs_match_an_independent_computation(resnet18: nn.Module,
                                                        batch: torch.Tensor) -> None:
    _, recorded = capture_activations(resnet18, batch)
    _, recorded = capture_activations(resnet18, batch)
    block = resnet18.layer1[0]
    block_input = recorded["maxpool"]

    with torch.inference_mode():
        bn1 = block.bn1(block.conv1(block_input))
        bn2 = block.bn2(block.conv2(torch.relu(bn1)))
        out = torch.relu(bn2 + block_input)

    # `out += identity` then ReLU(inplace) run after bn2: its record must be a copy.
    torch.testing.assert_close(recorded["layer1.0.bn1"], bn1, rtol=0, atol=0)
    torch.testing.assert_close(recorded["layer1.0.bn2"], bn2, rtol=0, atol=0)
    assert recorded["layer1.0.bn2"].min() < 0
    torch.testing.assert_close(recorded["layer1.0"], out, rtol=1e-6, atol=1e-6)


def test_plain_forward_is_unchanged_by_capture(resnet18: nn.Module, batch: torch.Tensor) -> None:
    with torch.inference_mode():
        before = resnet18(batch).clone()
    capture_activations(resnet18, batch)
    with torch.inference_mode():
        after = resnet18(batch)

    assert torch.equal(before, after)


# --------------------------------------------------------------------------- hooks and state

class Exploding(nn.Module):
    """Conv -> BN -> ReLU(inplace) -> a layer that raises when armed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        if self.armed:
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("probed", [False, True])
def test_no_hook_left_after_an_exception(probed: bool) -> None:
    # The hook path (used for models torch.fx cannot trace) is where hooks could leak.
    torch.manual_seed(0)
    model = Exploding().train()
    inputs = torch.randn(1, 3, 8, 8)
    if probed:
        capture_with_hooks(model, inputs)
    model.armed = True

    with pytest.raises(RuntimeError, match="boom"):
        capture_with_hooks(model, inputs)

    assert not has_hooks(model)
    assert model.training and model.bn.training


def test_traced_path_propagates_errors_and_restores_state() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 2)).train()
    capture_activations(model, torch.randn(1, 3, 8, 8))       # traced and verified
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        capture_activations(model, torch.randn(1, 3, 10, 10))   # the Linear fails at run time
    assert not has_hooks(model)
    assert all(m.training for m in model.modules())


def test_traced_and_hooked_recordings_agree() -> None:
    torch.manual_seed(0)
    for name in ("resnet18", "mobilenet_v2", "googlenet", "alexnet"):   # alexnet: in-place ReLU on a conv output
        model = torchvision.models.get_model(name, weights=None).eval()
        inputs = torch.randn(1, 3, 224, 224)
        traced_output, traced = capture_activations(model, inputs)
        hooked_output, hooked = capture_with_hooks(model, inputs)
        assert set(traced) == set(hooked), name
        for layer, tensor in hooked.items():
            torch.testing.assert_close(traced[layer], tensor, rtol=1e-4, atol=1e-5, msg=f"{name} {layer}")
        torch.testing.assert_close(first_tensor(traced_output), first_tensor(hooked_output))


@pytest.mark.parametrize("training", [False, True])
def test_training_flag_restored(training: bool, batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = Exploding().train(training)
    running_mean = model.bn.running_mean.clone()

    capture_activations(model, batch[:, :, :16, :16])

    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert torch.equal(model.bn.running_mean, running_mean)   # recorded in eval mode
    assert not has_hooks(model)


def test_mixed_training_flags_restored_per_module(batch: torch.Tensor) -> None:
    # Fine-tuning with a frozen BatchNorm: the model trains, its BN does not.
    torch.manual_seed(0)
    model = Exploding().train()
    model.bn.eval()

    capture_activations(model, batch[:, :, :16, :16])

    assert model.training and model.conv.training
    assert not model.bn.training


def test_requires_grad_is_untouched(batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = Exploding()
    model.conv.weight.requires_grad_(False)

    output, recorded = capture_activations(model, batch[:, :, :16, :16])

    assert not model.conv.weight.requires_grad and model.conv.bias.requires_grad
    assert not output.requires_grad and not recorded["bn"].requires_grad


def test_record_outputs_removes_hooks_when_the_block_raises(resnet18: nn.Module) -> None:
    with pytest.raises(KeyError):
        with hooks.record_outputs(resnet18, ["conv1", "layer1"]):
            assert has_hooks(resnet18)
            raise KeyError("stop")
    assert not has_hooks(resnet18)


def test_first_tensor_of_nested_outputs() -> None:
    a, b = torch.zeros(1), torch.ones(1)
    assert first_tensor(a) is a
    assert first_tensor((None, [b, a])) is b
    assert first_tensor({"x": 3, "y": a}) is a
    assert first_tensor((1, "two")) is None


# --------------------------------------------------------------------------- real weights

def test_pretrained_mobilenet_sees_a_cat(mobilenet: LoadedModel) -> None:
    result = run_forward(mobilenet, sample_image("chelsea"))

    best = top_k(mobilenet, result.probabilities, 5)[0]
    assert best.index in CATS, best
    assert "cat" in best.label or best.label == "tabby"
    assert [p.index for p in inference.predict(mobilenet, sample_image("chelsea"), 1)] == [best.index]


def test_pretrained_mobilenet_sees_espresso(mobilenet: LoadedModel) -> None:
    result = run_forward(mobilenet, sample_image("coffee"))

    best = top_k(mobilenet, result.probabilities, 1)[0]
    assert (best.index, best.label) == (ESPRESSO, "espresso")
    assert tuple(result.activations["features.18"].shape) == (1280, 7, 7)


# --------------------------------------------------------------------------- cache

def test_activation_cache_reuses_the_pass(resnet18: nn.Module) -> None:
    loaded = wrap_module(resnet18, "resnet18", device="cpu")
    first_image = from_array(np.zeros((32, 32, 3), dtype=np.uint8), "black")
    second_image = from_array(np.full((32, 32, 3), 255, dtype=np.uint8), "white")
    forwards = []

    def count(_module: nn.Module, _inputs: object, _output: object) -> None:
        forwards.append(1)

    cache = ActivationCache(capacity=2)
    handle = resnet18.conv1.register_forward_hook(count)   # a leaf: runs in traced and hooked passes alike
    try:
        first = cache.get(loaded, first_image)
        calls_after_first = len(forwards)          # recorded pass + one-time check on a new model
        assert cache.get(loaded, first_image) is first
        assert len(forwards) == calls_after_first
        second = cache.get(loaded, second_image)
        assert second is not first
        assert len(forwards) == calls_after_first + 1
        assert cache.get(loaded, first_image) is first      # capacity 2 keeps both
        assert len(forwards) == calls_after_first + 1
        other_model = wrap_module(resnet18, "resnet18 again", device="cpu")
        assert cache.get(other_model, first_image) is not first   # new token, new pass
        cache.clear()
        assert cache.get(loaded, first_image) is not first
    finally:
        handle.remove()
    assert not has_hooks(resnet18)


def test_activation_cache_evicts_least_recent(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_run_forward(model: object, image: object) -> object:
        calls.append(image.source)
        return inference.ForwardPass(0, image, None, None, {}, (), 0.0)

    monkeypatch.setattr(inference, "run_forward", fake_run_forward)
    model = wrap_module(nn.Identity(), "identity", device="cpu")
    a, b, c = (from_array(np.zeros((2, 2), dtype=np.uint8), name) for name in "abc")
    cache = ActivationCache(capacity=2)

    for image in (a, b, a, c, a, b):
        cache.get(model, image)

    assert calls == ["a", "b", "c", "b"]


def test_traced_recorder_shares_weights_and_leaves_the_model_alone() -> None:
    from cnnviewer.engine.runtime.graph_capture import graph_recorder

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    capture_activations(model, torch.randn(1, 3, 64, 64))
    recorder = graph_recorder(model)
    assert recorder is not None and recorder.verified
    model_parameters = {id(p) for p in model.parameters()}
    assert {id(p) for p in recorder.module.parameters()} <= model_parameters   # shared, not copied
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))  # the model keeps its in-place ReLUs
    for node in recorder.module.graph.nodes:   # nothing in place writes to a kept tensor
        if node.op == "call_module" and getattr(recorder.module.get_submodule(node.target), "inplace", False):
            assert node.args[0].name not in recorder._kept, node.name


def test_allocator_tuning_is_accepted_on_linux() -> None:
    import sys

    from cnnviewer.engine.runtime.memory import keep_freed_memory

    assert keep_freed_memory() is sys.platform.startswith("linux")


def test_derived_outputs_are_recomputed_exactly_and_leave_the_model_alone() -> None:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).train()
    with torch.no_grad():   # non-trivial running statistics
        model.features[0][1].running_mean.uniform_(-1, 1)
    running_mean = model.features[0][1].running_mean.clone()
    inputs = torch.randn(1, 3, 96, 96)
    _, traced = capture_activations(model, inputs)
    bn_output = traced["features.0.1"]          # derived: recomputed now, after the pass
    relu_output = traced["features.0.2"]
    assert model.training and model.features[0][1].training
    assert torch.equal(model.features[0][1].running_mean, running_mean)
    model.eval()
    with torch.inference_mode():
        expected_bn = model.features[0][1](model.features[0][0](inputs))
    torch.testing.assert_close(bn_output, expected_bn, rtol=0, atol=0)
    torch.testing.assert_close(relu_output, expected_bn.clamp(0, 6), rtol=0, atol=0)
    assert traced.shape("features.0.2") == tuple(expected_bn.shape)


class AliasNet(nn.Module):
    """In-place ops reached through aliases and functions without a torch.* twin."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.Identity()                  # 'BatchNorm2d(c) if bn else Identity()'
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.norm(self.conv(x)))
        y = self.drop(self.conv2(x))
        torch.nn.functional.leaky_relu_(y)
        return y.flatten(1).relu_()


class TupleBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor):
        out = self.conv(x)
        return out, self.head(out)


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = TupleBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, aux = self.block(x)
        return out.mean() + aux.mean()


@pytest.mark.parametrize("net", [AliasNet, TupleNet])
def test_traced_recording_matches_hooks_through_aliases_and_tuples(net) -> None:
    from cnnviewer.engine.runtime.graph_capture import graph_recorder

    torch.manual_seed(0)
    model = net().eval()
    inputs = torch.randn(1, 3, 12, 12)
    _, traced = capture_activations(model, inputs)
    assert graph_recorder(model) is not None                 # the traced path was used
    _, hooked = capture_with_hooks(model, inputs)
    for layer, tensor in hooked.items():
        torch.testing.assert_close(traced[layer], tensor, rtol=0, atol=0, msg=layer)
