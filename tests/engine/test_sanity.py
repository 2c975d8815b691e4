"""The randomization sanity check (Adebayo et al. 2018) on the real MobileNetV2 and a real photo.

The paper's qualitative result must come out: saliency and Grad-CAM decorrelate as soon as the
top layers are randomized, guided backprop keeps its map until the lowest layers go (failing).
Measured on the cat, seed 0: rank correlation averaged over the cascade saliency 0.15, guided
backprop 0.73, Grad-CAM 0.29; after the whole network 0.02 / 0.23 / 0.65 (Grad-CAM's 7x7 random
map varies by seed: see the seeds test). Coffee and astronaut, seeds 0-1: saliency 0.15-0.27,
guided backprop 0.73-0.77. ResNet-18 below is randomly initialised (only its structure is used).
"""

from __future__ import annotations

import os

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")   # before the engine reads it

import threading

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cnnviewer.engine.attribution import gradients, sanity
from cnnviewer.engine.attribution.similarity import (
    FAILING_SPEARMAN,
    mean_similarity,
    rank_correlation,
    structural_similarity,
)
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.workbench import Workbench

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PAPER_METHODS = {"saliency": {}, "guided-backprop": {}, "grad-cam": {}}


@pytest.fixture(scope="module")
def mobilenet():
    model = load_model("mobilenet_v2")
    assert model.trained, "the offline weights pack with MobileNetV2 must be installed"
    return model


@pytest.fixture(scope="module")
def cat(mobilenet):
    image = sample_image("chelsea")
    with torch.no_grad():
        logits = mobilenet.module(prepare_input(image, mobilenet.preprocess, mobilenet.device).tensor)
    return image, Target(class_index=int(logits.argmax()))


def snapshot(module: nn.Module) -> dict:
    return {"state": {k: v.clone() for k, v in module.state_dict().items()},
            "training": [m.training for m in module.modules()],
            "grad": [p.requires_grad for p in module.parameters()]}


def assert_unchanged(module: nn.Module, before: dict) -> None:
    after = snapshot(module)
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert before["training"] == after["training"] and before["grad"] == after["grad"]
    assert not has_hooks(module)


@pytest.fixture(scope="module")
def cascade(mobilenet, cat):
    image, target = cat
    before = snapshot(mobilenet.module)
    result = sanity.sanity_check(Workbench(), mobilenet, image, target, PAPER_METHODS)
    assert_unchanged(mobilenet.module, before)
    return result


def test_cascading_check_reproduces_the_papers_result(cascade) -> None:
    stages = ["original", "classifier"] + [f"features.{i}" for i in range(18, -1, -1)]
    assert list(cascade.stages) == stages                     # from the output down to the first conv
    assert cascade.complete and cascade.mode == "cascading"
    for method in PAPER_METHODS:
        assert len(cascade.maps[method]) == len(stages) == len(cascade.spearman[method]) == len(cascade.ssim[method])
        assert cascade.spearman[method][0] == pytest.approx(1.0) and cascade.ssim[method][0] == pytest.approx(1.0)
        assert all(m.shape == (224, 224) and m.dtype == np.float32 for m in cascade.maps[method])
    mean = {m: mean_similarity(cascade.spearman[m]) for m in PAPER_METHODS}
    first_half = {m: float(np.mean(cascade.spearman[m][1:11])) for m in PAPER_METHODS}
    # guided backprop keeps its map while the top half is random (measured 0.96, SSIM 0.78) and fails
    assert first_half["guided-backprop"] > 0.85 and np.mean(cascade.ssim["guided-backprop"][1:11]) > 0.6
    assert mean["guided-backprop"] > FAILING_SPEARMAN + 0.1 and cascade.failing["guided-backprop"]   # 0.73
    # saliency and Grad-CAM decorrelate at once (measured first half 0.21 and 0.25; means 0.15, 0.29) and pass
    for method in ("saliency", "grad-cam"):
        assert first_half[method] < 0.4 and mean[method] < FAILING_SPEARMAN - 0.15, method
        assert not cascade.failing[method]
    assert cascade.spearman["saliency"][-1] < 0.25 and cascade.ssim["saliency"][-1] < 0.25   # 0.02, 0.10
    assert "fails" in cascade.verdict("guided-backprop") and "passes" in cascade.verdict("saliency")
    assert cascade.options["grad-cam"]["layer"] == "features.18.2"
    assert cascade.display.shape == (224, 224, 3) and cascade.display.dtype == np.uint8


def test_a_second_photo_gives_the_same_verdicts(mobilenet) -> None:
    """The espresso (measured: guided backprop 0.77, first half 0.94; saliency 0.28)."""
    image = sample_image("coffee")
    with torch.no_grad():
        top = int(mobilenet.module(prepare_input(image, mobilenet.preprocess, mobilenet.device).tensor).argmax())
    result = sanity.sanity_check(Workbench(), mobilenet, image, Target(class_index=top),
                                 {"saliency": {}, "guided-backprop": {}})
    assert result.failing == {"saliency": False, "guided-backprop": True}
    assert mean_similarity(result.spearman["guided-backprop"]) > FAILING_SPEARMAN + 0.15
    assert np.mean(result.spearman["guided-backprop"][1:11]) > 0.85
    assert mean_similarity(result.spearman["saliency"]) < FAILING_SPEARMAN - 0.1


def test_grad_cam_decorrelates_over_seeds(mobilenet, cat) -> None:
    """A random Grad-CAM is a 7x7 field: one seed's end correlation ranges -0.6..0.7, so average seeds
    as the paper averages images (measured over seeds 1-4: curve mean 0.04, end 0.23)."""
    image, target = cat
    runs = [sanity.sanity_check(Workbench(), mobilenet, image, target, {"grad-cam": {}}, seed=seed)
            for seed in (1, 2, 3, 4)]
    assert not any(run.failing["grad-cam"] for run in runs)
    assert np.mean([mean_similarity(run.spearman["grad-cam"]) for run in runs]) < 0.25
    assert np.mean([run.spearman["grad-cam"][-1] for run in runs]) < 0.45


def test_the_original_maps_are_the_views_maps(cascade, mobilenet, cat) -> None:
    image, target = cat
    workbench = Workbench()
    for method in ("saliency", "grad-cam"):
        view = workbench.gradient(mobilenet, image, method, target)
        expected = np.abs(view.attribution).max(axis=0)
        np.testing.assert_allclose(cascade.maps[method][0], expected, rtol=1e-5, atol=1e-7)


def test_cascade_stage_equals_a_fresh_randomized_copy(mobilenet, cat) -> None:
    """Incremental randomization of one copy gives the same network as copying with all names at once."""
    image, target = cat
    result = sanity.sanity_check(Workbench(), mobilenet, image, target, {"saliency": {}}, stages=2, seed=3)
    assert result.stages == ("original", "classifier", "features.18") and not result.complete
    fresh = sanity.randomized_copy(mobilenet.module, ["classifier", "features.18"], seed=3)
    x = prepare_input(image, mobilenet.preprocess, mobilenet.device).tensor
    np.testing.assert_array_equal(result.maps["saliency"][2], gradients.to_map(gradients.saliency(fresh, x, target)))


def test_independent_variant_randomizes_one_block_at_a_time(mobilenet, cat) -> None:
    image, target = cat
    before = snapshot(mobilenet.module)
    result = sanity.sanity_check(Workbench(), mobilenet, image, target, {"grad-cam": {}}, mode="independent",
                                 stages=3, seed=1)
    assert_unchanged(mobilenet.module, before)
    assert result.stages == ("original", "classifier", "features.18", "features.17")
    cams = result.maps["grad-cam"]
    # only the classifier random: Grad-CAM changes (its channel weights are the classifier's row)
    assert np.abs(cams[1] / cams[1].max() - cams[0] / cams[0].max()).max() > 0.3
    assert result.spearman["grad-cam"][1] < 0.8                # 0.62 for this seed (-0.6..0.9 over seeds)
    x = prepare_input(image, mobilenet.preprocess, mobilenet.device).tensor
    alone = sanity.randomized_copy(mobilenet.module, ["features.17"], seed=1)   # features.18's block was put back
    expected = gradients.grad_cam(alone, x, target, "features.18.2")[0, 0].numpy()
    np.testing.assert_array_equal(cams[3], expected)
    assert "with only features.17 random" in result.verdict("grad-cam")


def test_cancel_raises_and_progress_covers_stages_times_methods(mobilenet, cat) -> None:
    image, target = cat
    cancel, seen = threading.Event(), []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if len(seen) == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        sanity.sanity_check(Workbench(), mobilenet, image, target, {"saliency": {}, "grad-cam": {}}, stages=4,
                            progress=progress, cancel=cancel)
    assert seen == [0.0, 0.1, 0.2]                            # 5 stages x 2 methods, cancelled at the third
    assert not has_hooks(mobilenet.module)


def test_stages_of_a_resnet_and_per_layer() -> None:
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()      # random init: the structure is what counts
    names = [name for name, _ in sanity.randomization_stages(resnet)]
    assert names == ["fc"] + [f"layer{i}.{j}" for i in (4, 3, 2, 1) for j in (1, 0)] + ["bn1", "conv1"]
    layers = [name for name, _ in sanity.randomization_stages(resnet, "layer")]
    assert layers[0] == "fc" and layers[-1] == "conv1" and "layer4.1.bn2" in layers and len(layers) == 41
    with torch.device("meta"):                                      # structure only: no 130M weights made
        vgg = torchvision.models.vgg11(weights=None)                # a Sequential of plain layers is opened
    assert [n for n, _ in sanity.randomization_stages(vgg)][:4] == ["classifier.6", "classifier.3", "classifier.0",
                                                                    "features.18"]
    wrapped = nn.Sequential(resnet)                                  # a wrapper is opened
    assert [n for n, _ in sanity.randomization_stages(wrapped)][:2] == ["0.fc", "0.layer4.1"]


def test_randomized_copy_changes_only_the_named_modules() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        model.layer4[1].bn2.running_mean.fill_(0.5)
    model.fc.weight.requires_grad_(False)
    before = snapshot(model)
    clone = sanity.randomized_copy(model, ["layer4.1", "fc"], seed=0)
    assert_unchanged(model, before)
    again = sanity.randomized_copy(model, ["fc", "layer4.1"], seed=0)   # order does not matter
    for (name, theirs), mine, other in zip(model.state_dict().items(), clone.state_dict().values(),
                                           again.state_dict().values()):
        assert torch.equal(mine, other), name
        randomized = name.startswith(("layer4.1.", "fc.")) and "num_batches" not in name
        if randomized and "running" not in name and not name.endswith(("bn1.weight", "bn2.weight", "bias")):
            assert not torch.equal(mine, theirs), name
        if not randomized:
            assert torch.equal(mine, theirs), name
    assert torch.equal(clone.layer4[1].bn2.running_mean, torch.zeros(512))   # BN statistics reset with it
    assert not clone.fc.weight.requires_grad


def test_similarity_scores() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((32, 32)).astype(np.float32)
    assert rank_correlation(a, a ** 3) == pytest.approx(1.0)         # ranks only
    assert rank_correlation(a, -a) == pytest.approx(1.0)             # of absolute values
    assert abs(rank_correlation(a, rng.random((32, 32)))) < 0.15
    assert rank_correlation(a, np.zeros_like(a)) == 0.0 and rank_correlation(a * 0, a * 0) == 1.0
    assert structural_similarity(a, 5 * a) == pytest.approx(1.0)     # normalised to [0, 1] first
    assert structural_similarity(a, rng.random((32, 32))) < 0.2
    with pytest.raises(ValueError):
        structural_similarity(a, a[:8])


class Tokened(nn.Module):
    """A small CNN with a parameter of its own (as a ViT's class token): the own-parameters stage."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.full((1, 8, 1, 1), 0.1))
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x) + self.shift))


def test_own_parameters_and_per_layer_granularity() -> None:
    from cnnviewer.engine.models.handle import Preprocess, wrap_module

    torch.manual_seed(0)
    module = Tokened().eval()
    assert [name for name, _ in sanity.randomization_stages(module)] == ["head", "body", "stem",
                                                                         "(the model's own parameters)"]
    layers = sanity.randomization_stages(module, "layer")
    assert [name for name, _ in layers] == ["head.2", "body.0", "stem.1", "stem.0", "(the model's own parameters)"]
    own = sanity.randomized_copy(module, [layers[-1][1][0]], seed=0)     # the token only, not the children
    assert not torch.equal(own.shift, module.shift)
    assert all(torch.equal(a, b) for (n, a), b in zip(own.state_dict().items(), module.state_dict().values())
               if n != "shift")
    model = wrap_module(module, "tokened", preprocess=Preprocess(resize_size=32, crop_size=32))
    before = snapshot(model.module)
    result = sanity.sanity_check(Workbench(), model, sample_image("coffee"), Target(class_index=2),
                                 {"saliency": {}, "grad-cam": {}}, granularity="layer", mode="independent")
    assert_unchanged(model.module, before)
    assert len(result.stages) == 6 and result.maps["saliency"][0].shape == (32, 32)
    assert result.options["grad-cam"]["layer"]


def test_job_context_progress_reaches_inside_slow_methods(mobilenet, cat) -> None:
    """Through a JobContext as the UI's job runs it: integrated gradients reports within its stage."""
    from cnnviewer.engine.jobs import JobContext

    image, target = cat
    seen: list[tuple[float, str]] = []
    context = JobContext(report=lambda fraction, text: seen.append((fraction, text)))
    result = sanity.sanity_check(Workbench(), mobilenet, image, target,
                                 {"integrated-gradients": {"steps": 4, "batch": 2}, "saliency": {}},
                                 stages=1, context=context)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0.125 in fractions   # half of IG's 1st of 4
    assert all(text.startswith("sanity check") for _, text in seen)
    assert result.options["integrated-gradients"] == {"steps": 4, "baseline": "mean colour"}
    context.cancel.set()
    with pytest.raises(Cancelled):
        sanity.sanity_check(Workbench(), mobilenet, image, target, {"saliency": {}}, stages=1, context=context)
