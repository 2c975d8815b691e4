"""The lesion study against an independent computation: a deep copy of the model whose block's forward
is replaced by the identity (or, for ResNet's projection blocks, by relu(downsample(x))) must give the
same logits and top-1 as the runner's lesion, which starts from the kept input of the block."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from skimage import data

from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.experiments.blocks import residual_blocks
from cnnviewer.engine.experiments.lesion import (
    LesionRunner,
    folder_images,
    folder_labels,
    lesion_study,
)
from cnnviewer.engine.media.images import from_array
from cnnviewer.engine.models.handle import wrap_module
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PHOTOS = ("chelsea", "coffee", "astronaut")


@pytest.fixture(scope="module")
def mobilenet():
    return load_model("mobilenet_v2")


@pytest.fixture(scope="module")
def photos():
    return [from_array(getattr(data, name)(), name) for name in PHOTOS]


def batch_of(model, photos) -> torch.Tensor:
    return torch.cat([prepare_input(p, model.preprocess, model.device).tensor for p in photos])


def state(module: torch.nn.Module):
    return ([m.training for m in module.modules()], [p.requires_grad for p in module.parameters()],
            {k: v.clone() for k, v in module.state_dict().items()})


def same_state(before, after) -> bool:
    return before[0] == after[0] and before[1] == after[1] and all(
        torch.equal(before[2][k], after[2][k]) for k in before[2])


def copy_without(module: torch.nn.Module, name: str, forward) -> torch.nn.Module:
    twin = copy.deepcopy(module)
    block = twin.get_submodule(name)
    block.forward = forward(block)
    return twin


def test_mobilenet_v2_blocks():
    blocks = residual_blocks(torchvision.models.mobilenet_v2())
    assert [b.name for b in blocks] == [f"features.{i}" for i in range(1, 18)]
    identity = [b.name for b in blocks if b.skip == "identity"]
    assert identity == [f"features.{i}" for i in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)]
    assert {b.skip for b in blocks if b.name not in identity} == {"none"}
    third = blocks[3]
    assert third.name == "features.4" and "resolution 56→28 and channels 24→32" in third.reason
    assert "channels 32→16" in blocks[0].reason and "resolution" not in blocks[0].reason


def test_resnet18_blocks_and_generic_tracing_agree():
    model = torchvision.models.resnet18()
    blocks = residual_blocks(model)
    assert [(b.name, b.skip) for b in blocks] == [
        ("layer1.0", "identity"), ("layer1.1", "identity"), ("layer2.0", "projection"), ("layer2.1", "identity"),
        ("layer3.0", "projection"), ("layer3.1", "identity"), ("layer4.0", "projection"), ("layer4.1", "identity")]
    assert "leaves the projection" in blocks[2].reason and "56→28" in blocks[2].reason
    from cnnviewer.engine.experiments import blocks as module
    for block in blocks:   # the fx rule, without the class's own flag, finds the same skip
        assert module._traced_skip(model.get_submodule(block.name)) == block.skip


def test_mobilenet_lesions_match_identity_copies_on_real_weights(mobilenet, photos):
    module = mobilenet.module
    before = state(module)
    inputs = batch_of(mobilenet, photos)
    blocks = residual_blocks(module)
    with torch.no_grad():
        runner = LesionRunner(module, blocks)
        assert runner.graph_module is not None
        intact, kept = runner.intact(inputs)
        torch.testing.assert_close(intact, module(inputs), atol=1e-5, rtol=0)
        for block in (b for b in blocks if b.deletable):
            ours = runner.lesioned(kept, [block.name])
            oracle = copy_without(module, block.name, lambda _b: (lambda x: x))(inputs)
            torch.testing.assert_close(ours, oracle, atol=1e-4, rtol=0)
            assert torch.equal(ours.argmax(1), oracle.argmax(1))
        pair = ["features.5", "features.13"]
        twin = copy_without(copy_without(module, pair[0], lambda _b: (lambda x: x)), pair[1], lambda _b: (lambda x: x))
        torch.testing.assert_close(runner.lesioned(kept, pair), twin(inputs), atol=1e-4, rtol=0)
    assert not has_hooks(module) and same_state(before, state(module))


def test_resnet18_lesions_match_copies_random_weights():
    """Random initialisation (no ResNet weights offline): the lesion is checked, not the accuracy."""
    torch.manual_seed(0)
    module = torchvision.models.resnet18().eval()
    module.layer1[0].conv1.weight.requires_grad_(False)     # a partly frozen model keeps its flags
    module.layer2.train()                                   # and a module left training stays training
    before = state(module)
    inputs = torch.randn(2, 3, 96, 96)
    blocks = residual_blocks(module, inputs[:1])
    from cnnviewer.engine.runtime.modes import eval_mode
    with torch.no_grad(), eval_mode(module):
        runner = LesionRunner(module, blocks)
        _, kept = runner.intact(inputs)
        for block in blocks:
            if block.skip == "identity":
                oracle = copy_without(module, block.name, lambda _b: (lambda x: x))
            else:
                oracle = copy_without(module, block.name, lambda b: (lambda x: b.relu(b.downsample(x))))
            torch.testing.assert_close(runner.lesioned(kept, [block.name]), oracle(inputs), atol=1e-4, rtol=0)
    assert not has_hooks(module) and same_state(before, state(module))


def test_lesion_study_agreement_equals_copies(mobilenet, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    module = mobilenet.module
    before = state(module)
    seen = []
    result = lesion_study(mobilenet, [*photos, broken], random_counts=(2,), repeats=2, batch=2,
                          progress=seen.append)
    assert result.images == PHOTOS and result.skipped[0][0] == str(broken)
    assert "broken.jpg" in result.skipped[0][1]
    inputs = batch_of(mobilenet, photos)
    with torch.no_grad():
        top = module(inputs).argmax(1)
        for block, lesion in zip(result.blocks, result.per_block):
            if not block.deletable:
                assert lesion.agreement is None
                continue
            twin = copy_without(module, block.name, lambda _b: (lambda x: x))
            expected = float((twin(inputs).argmax(1) == top).float().mean())
            assert lesion.agreement == pytest.approx(expected)
        agreements = []
        for subset in result.random[0].subsets:
            twin = module
            for name in subset:
                twin = copy_without(twin, name, lambda _b: (lambda x: x))
            agreements.append(float((twin(inputs).argmax(1) == top).float().mean()))
            assert len(subset) == 2
        assert result.random[0].agreement_mean == pytest.approx(np.mean(agreements))
        assert result.random[0].agreement_sd == pytest.approx(np.std(agreements, ddof=1))
    assert result.forwards == 3 * (1 + 10 + 2)
    assert seen[-1] == 1.0 and all(b >= a for a, b in itertools.pairwise(seen))
    assert result.intact_accuracy is None and result.random[0].count == 2
    text = json.dumps(result.to_json())
    assert '"features.3"' in text
    assert not has_hooks(module) and same_state(before, state(module))


def test_lesion_study_accuracy_with_labels_and_cancel(mobilenet, photos):
    module = mobilenet.module
    with torch.no_grad():
        top = module(batch_of(mobilenet, photos)).argmax(1).tolist()
    labels = [top[0], top[1], (top[2] + 1) % 1000]    # two right, one wrong
    result = lesion_study(mobilenet, photos, labels=labels, random_counts=(), batch=3)
    assert result.intact_accuracy == pytest.approx(2 / 3)
    for lesion in result.per_block:
        if lesion.agreement is not None:
            assert lesion.accuracy is not None and lesion.accuracy <= lesion.agreement + 1 / 3 + 1e-9
    import threading
    cancel = threading.Event()

    def stop(fraction: float) -> None:
        if fraction > 0.2:
            cancel.set()
    with pytest.raises(Cancelled):
        lesion_study(mobilenet, photos, random_counts=(), batch=1, cancel=cancel, progress=stop)
    assert not has_hooks(module) and not module.training


def test_untraceable_model_runs_whole_with_a_hook_that_goes():
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.block = Residual()
            self.head = torch.nn.Linear(8, 5)

        def forward(self, x):
            x = self.block(self.stem(x))
            if x.sum() > 0:        # data-dependent: torch.fx cannot trace it
                x = x * 1.0
            return self.head(x.mean((2, 3)))

    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    torch.manual_seed(0)
    net = Net().eval()
    blocks = residual_blocks(net, torch.zeros(1, 3, 16, 16))
    assert [(b.name, b.skip) for b in blocks] == [("block", "identity")]
    inputs = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        runner = LesionRunner(net, blocks)
        assert runner.graph_module is None and "cannot trace" in runner.reuse
        ours = runner.lesioned(runner.intact(inputs)[1], ["block"], inputs)
        torch.testing.assert_close(ours, copy_without(net, "block", lambda _b: (lambda x: x))(inputs))
    assert not has_hooks(net)


def test_folder_labels_from_subfolders_and_synsets(tmp_path):
    model = wrap_module(torchvision.models.mobilenet_v2(), "mobilenet_v2",
                        categories=tuple(load_model_categories()))
    picture = Image.fromarray(data.chelsea())
    for folder in ("Egyptian_cat", "n01440764"):
        (tmp_path / folder).mkdir()
        picture.save(tmp_path / folder / "a.png")
    images = folder_images(tmp_path)
    assert [p.parent.name for p in images] == ["Egyptian_cat", "n01440764"]
    assert folder_labels(tmp_path, model) == [285, 0]
    (tmp_path / "other").mkdir()
    picture.save(tmp_path / "other" / "b.png")
    assert folder_labels(tmp_path, model) is None          # one image without a class: agreement only
    (tmp_path / "labels.csv").write_text("other/b.png,tabby\n")
    assert folder_labels(tmp_path, model) == [285, 0, 281]


def load_model_categories():
    from cnnviewer.engine.models.pretrained import default_weights
    return default_weights("mobilenet_v2").meta["categories"]


def test_efficientnet_lite0_lesions_match_identity_copies_on_real_weights(photos):
    model = load_model("timm:tf_efficientnet_lite0")
    module = model.module
    blocks = residual_blocks(module)
    assert len(blocks) == 16 and [b.name for b in blocks if b.skip == "identity"] == [
        "blocks.1.1", "blocks.2.1", "blocks.3.1", "blocks.3.2", "blocks.4.1", "blocks.4.2", "blocks.5.1",
        "blocks.5.2", "blocks.5.3"]
    from cnnviewer.engine.experiments import blocks as found
    for block in blocks:    # timm's has_skip and the fx rule agree
        assert (found._traced_skip(module.get_submodule(block.name)) or "none") == block.skip
    inputs = batch_of(model, photos[:2])
    with torch.no_grad():
        runner = LesionRunner(module, blocks)
        _, kept = runner.intact(inputs)
        for block in (b for b in blocks if b.deletable):
            oracle = copy_without(module, block.name, lambda _b: (lambda x: x))(inputs)
            torch.testing.assert_close(runner.lesioned(kept, [block.name]), oracle, atol=1e-4, rtol=0)
    assert not has_hooks(module)


class _Residual(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


class _Mutating(torch.nn.Module):
    """stem -> first -> one -> two -> head, with an in-place relu where `where` says."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.first = _Residual()         # the model's input is its kept value
        self.stem = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.one, self.two = _Residual(), _Residual()
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        h = self.one(self.stem(self.first(x)))
        out = self.two(h)
        if self.where == "input of two":
            torch.relu_(h)                    # changes what `two` read, after it read it
            out = out + h
        else:
            torch.relu_(out)                  # deleting `two` makes `out` the kept `h` itself
        return self.head(out.mean((2, 3)))


@pytest.mark.parametrize("where", ["input of two", "output of two"])
def test_kept_values_changed_in_place_give_the_model_s_own_answer(where):
    """In-place changes of a kept value, seen through version counters: in the intact pass the model then
    runs whole (only it knows when the value was read); in a lesion, the kept values are copied."""
    from cnnviewer.engine.experiments.blocks import Mutated
    torch.manual_seed(0)
    net = _Mutating(where).eval()
    inputs = torch.randn(3, 8, 12, 12)
    blocks = residual_blocks(net, inputs[:1])
    assert [(b.name, b.skip) for b in blocks] == [("first", "identity"), ("one", "identity"), ("two", "identity")]
    with torch.no_grad():
        runner = LesionRunner(net, blocks)
        kept = None
        for _ in range(3):                    # as lesion_study does: the batch again after Mutated
            try:
                intact, kept = runner.intact(inputs)
                torch.testing.assert_close(intact, net(inputs))
                results = {name: runner.lesioned(kept, [name], inputs) for name in ("first", "one", "two")}
                results["one+two"] = runner.lesioned(kept, ["one", "two"], inputs)
                break
            except Mutated:
                continue
        assert kept is not None
        assert (runner.graph_module is None) == (where == "input of two")
        assert runner.copy_kept == (where == "output of two")
        for name in ("first", "one", "two"):
            oracle = copy_without(net, name, lambda _b: (lambda x: x))(inputs)
            torch.testing.assert_close(results[name], oracle)
        both = copy_without(copy_without(net, "one", lambda _b: (lambda x: x)), "two", lambda _b: (lambda x: x))
        torch.testing.assert_close(results["one+two"], both(inputs))
    assert not has_hooks(net)
