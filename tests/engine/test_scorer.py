"""The cached scoring model (attribution/scorer.py): the same scores as the model itself, on the real
MobileNetV2 and the cat photo; falls back when the model cannot be traced or traces wrongly; reused
across maps of one model and dropped for another; never touches the model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import timm
import torch
import torchvision
from skimage import data
from torch import nn

from cnnviewer.engine.attribution import faithfulness, gradients
from cnnviewer.engine.attribution.scorer import Scorer
from cnnviewer.engine.attribution.scores import ranking
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.media.images import from_array
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.workbench import Workbench


@pytest.fixture(scope="module")
def cat(one_torch_thread):
    """(LoadedModel, InputImage, (1, 3, 224, 224) input, top-1 Target, Grad-CAM map)."""
    model = load_model("mobilenet_v2")
    image = from_array(data.chelsea(), "chelsea")
    x = prepare_input(image, model.preprocess, model.device).tensor
    with torch.no_grad():
        target = Target(class_index=int(model.module.eval()(x).argmax()))
    return model, image, x, target, gradients.grad_cam(model.module, x, target, "features.18")[0, 0].numpy()


def same_curves(found, expected, atol=1e-4):
    for name in expected:
        np.testing.assert_allclose(found[name].values, expected[name].values, rtol=0, atol=atol)


def test_traced_scorer_equals_the_model_and_leaves_it_alone(cat):
    model, _, x, target, cam = cat
    module = model.module
    before = {name: value.clone() for name, value in module.state_dict().items()}
    flags = [p.requires_grad for p in module.parameters()]
    plain = faithfulness.deletion_insertion(module, x, target, cam, steps=10, fold=False)
    plain_road = faithfulness.road(module, x, target, cam, (30, 70), fold=False)
    scorer = Scorer(module, token=model.token, trace_from=1)
    scorer.begin_map()
    found = faithfulness.deletion_insertion(module, x, target, cam, steps=10, scorer=scorer)
    assert scorer.kind == "traced", scorer.fallback
    assert scorer.prepare_ms["traced"] > 0 and "folded" not in scorer.prepare_ms
    same_curves(found, plain)
    road_curves, road_scores = faithfulness.road(module, x, target, cam, (30, 70), scorer=scorer)
    same_curves(road_curves, plain_road[0])
    for name, value in plain_road[1].items():
        assert road_scores[name] == pytest.approx(value, abs=1e-3)   # logits, ~10 in size
    assert scorer.kind == "traced"   # verified on every batch shape met (4, 3, 1)
    channel = Target(layer="features.16", channel=5)
    layer = faithfulness.deletion_insertion(module, x, channel, cam, steps=4, scorer=scorer)
    same_curves(layer, faithfulness.deletion_insertion(module, x, channel, cam, steps=4, fold=False))
    assert "folded features.16" in scorer.prepare_ms
    assert not has_hooks(module) and not module.training
    assert [p.requires_grad for p in module.parameters()] == flags
    assert all(torch.equal(before[name], value) for name, value in module.state_dict().items())
    with pytest.raises(ValueError, match="another model"):
        faithfulness.deletion_insertion(torchvision.models.resnet18(), x, target, cam, scorer=scorer)


class Branchy(nn.Module):
    """Control flow on the data: an `if` on a tensor (the tracer warns; a trace holds one branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        features = self.conv(x).mean(dim=(2, 3))
        return self.head(features) if x.mean() > 5 else -self.head(features)


class Numbery(Branchy):
    """A number read from the data: traced (on noise) as a constant, wrong on the real inputs."""

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=(2, 3))) * (1.0 + float(x.mean()))


class Plain(Branchy):
    """Traceable."""

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=(2, 3)))


class Locked(Plain):
    """Cannot be deep copied (a lock): no trace, and the folded copy shares its modules."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


@pytest.mark.parametrize("kind, reason", [(Branchy, "tracing failed: control flow on the data"),
                                          (Numbery, "the traced copy disagrees"), (Locked, "tracing failed")])
def test_falls_back_when_the_trace_fails_or_disagrees(kind, reason, one_torch_thread):
    torch.manual_seed(0)
    module = kind().eval()
    x = torch.randn(1, 3, 16, 16) + 10.0
    relevance = torch.rand(16, 16).numpy()
    target = Target(class_index=2)
    expected = faithfulness.deletion_insertion(module, x, target, relevance, steps=6, substrate="mean colour",
                                               fold=False)
    scorer = Scorer(module, trace_from=1)
    scorer.begin_map()
    found = faithfulness.deletion_insertion(module, x, target, relevance, steps=6, substrate="mean colour",
                                            scorer=scorer)
    same_curves(found, expected, atol=1e-6)
    assert scorer.kind == "folded"
    assert scorer.fallback.startswith(reason), scorer.fallback
    same_curves(faithfulness.deletion_insertion(module, x, target, relevance, steps=6, substrate="mean colour",
                                                scorer=scorer), expected, atol=1e-6)


def test_timm_and_resnet_and_changed_weights(one_torch_thread):
    """Random weights (the scorer's equality does not depend on them): timm's EfficientNet-Lite (same
    padding, fused blocks), a ResNet's layer target; the copies are rebuilt after an in-place change."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    relevance = torch.rand(64, 64).numpy()
    lite = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    resnet = torchvision.models.resnet18(weights=None).eval()
    for module, target in ((lite, Target(class_index=3)), (resnet, Target(layer="layer3", channel=2))):
        scorer = Scorer(module, trace_from=1)
        scorer.begin_map()
        found = faithfulness.deletion_insertion(module, x, target, relevance, steps=4, substrate="black",
                                                scorer=scorer)
        same_curves(found, faithfulness.deletion_insertion(module, x, target, relevance, steps=4,
                                                           substrate="black", fold=False), atol=1e-5)
        assert scorer.kind == ("traced" if module is lite else "folded"), scorer.fallback
    assert scorer.prepare_ms.keys() == {"folded layer3"}
    with torch.no_grad():
        resnet.layer3[0].conv1.weight.mul_(3.0)   # a change in place: the cached copies are stale
    scorer.begin_map()
    changed = faithfulness.deletion_insertion(resnet, x, target, relevance, steps=4, substrate="black", scorer=scorer)
    same_curves(changed, faithfulness.deletion_insertion(resnet, x, target, relevance, steps=4,
                                                         substrate="black", fold=False), atol=1e-5)
    assert not np.allclose(changed["deletion"].values, found["deletion"].values)


def test_workbench_reuses_the_scorer_across_maps_and_drops_it_for_another_model(cat):
    model, image, _, target, _ = cat
    workbench = Workbench()
    first = workbench.gradient(model, image, "grad-cam", target)
    second = workbench.gradient(model, image, "saliency", target)
    a = faithfulness.evaluate_result(workbench, model, image, first, steps=6, percentiles=(30, 70))
    scorer = workbench.scorer(model)
    assert scorer.maps == 1 and scorer.kind == "folded" and not scorer.trace   # the window's: never traced
    assert workbench.scorer(model, trace=True) is scorer and scorer.trace       # the CLI's: traced from map 2
    b = faithfulness.evaluate_result(workbench, model, image, second, steps=6, percentiles=(30, 70))
    c = faithfulness.evaluate_result(workbench, model, image, first, steps=6, percentiles=(30, 70))
    assert workbench.scorer(model) is scorer and scorer.maps == 3
    assert scorer.kind == "traced", scorer.fallback   # prepared on the second map
    for name in ("deletion", "insertion"):
        assert c.scores[name] == pytest.approx(a.scores[name], abs=1e-4)   # folded, then traced: one score
    assert c.scores["road"] == pytest.approx(a.scores["road"], abs=1e-3)
    assert b.scores.keys() >= {"deletion", "insertion", "road"}
    other = load_model("mobilenet_v2")   # a new load: a new token
    assert workbench.scorer(other) is not scorer and workbench.scorer(other).module is other.module
    assert workbench._scorer is not scorer


def test_a_detection_wrapper_is_not_traced(one_torch_thread):
    """DetectionScore asks "is the box still there?" (an `if` on a tensor): the folded copy scores it."""
    from PIL import Image

    from cnnviewer.engine.detection.detectors import make_detector
    from cnnviewer.engine.detection.explain import explain_detection

    frame = np.asarray(Image.fromarray(data.astronaut()).resize((320, 240)))
    detector = make_detector("mtcnn")
    face = max(detector.raw(frame), key=lambda d: d.score)
    model, image = explain_detection(detector, face, frame, "frame.png")
    workbench = Workbench()
    workbench.scorer(model, trace=True)
    result = workbench.gradient(model, image, "saliency", Target(class_index=0))
    first, second = (faithfulness.evaluate_result(workbench, model, image, result, metrics=("deletion",), steps=8)
                     for _ in range(2))
    scorer = workbench.scorer(model)
    assert scorer.maps == 2 and scorer.kind == "folded" and scorer.fallback.startswith("tracing failed: control flow")
    x = prepare_input(image, model.preprocess, model.device).tensor
    plain = faithfulness.deletion_insertion(model.module, x, Target(class_index=0),
                                            ranking(result.method, result.attribution, result.options), steps=8,
                                            fold=False, mean=model.preprocess.mean, std=model.preprocess.std)
    np.testing.assert_allclose(second.curves["deletion"].values, plain["deletion"].values, atol=1e-5)
    assert second.scores["deletion"] == pytest.approx(first.scores["deletion"], abs=1e-6)


def test_a_trace_no_faster_than_the_folded_copy_is_dropped(monkeypatch, one_torch_thread):
    """With a clock on which every batch takes as long, the traced copy is not kept (nor is it
    before it was verified): the folded copy scores from then on, with the same results."""
    import itertools
    from types import SimpleNamespace

    from cnnviewer.engine.attribution import scorer as scorer_module

    ticks = itertools.count()
    monkeypatch.setattr(scorer_module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    torch.manual_seed(0)
    module = Plain().eval()
    batch, target = torch.randn(4, 3, 16, 16), Target(class_index=1)
    scorer = Scorer(module)
    scorer.begin_map()
    expected = [scorer.scores(batch, target) for _ in range(3)]   # the folded copy, timed
    scorer.begin_map()
    scorer.scores(batch, target)                                    # traced, verified
    assert scorer.kind == "traced", scorer.fallback
    found = [scorer.scores(batch, target) for _ in range(3)]        # traced, timed: no faster
    assert scorer.kind == "folded" and scorer.fallback.startswith("the traced copy is no faster")
    for (raw, p), (raw_e, p_e) in zip(found + [scorer.scores(batch, target)], expected + expected[:1]):
        np.testing.assert_allclose(p, p_e, atol=1e-6)
        np.testing.assert_allclose(raw, raw_e, atol=1e-5)
