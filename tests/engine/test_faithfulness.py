"""Faithfulness scores against independent implementations, on the real MobileNetV2 and the cat photo.

Oracles: pytorch-grad-cam's metrics/road.py (ROAD, its NoisyLinearImputer with noise 0), torchcam's
ClassificationMetric (Average Drop / Increase in Confidence), and a one-image-at-a-time deletion /
insertion loop written here from Petsiuk et al.'s definition.
"""

from __future__ import annotations

import threading
from functools import partial

import numpy as np
import pytest
import torch
import torchvision
from skimage import data
from torchvision.transforms.functional import gaussian_blur

from cnnviewer.engine.attribution import faithfulness, gradients
from cnnviewer.engine.attribution.imputation import impute
from cnnviewer.engine.attribution.scores import (
    composite,
    pixel_order,
    ranking,
    step_counts,
    trapezoid,
)
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.media.images import from_array
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.workbench import Workbench

LAYER = "features.18"   # MobileNetV2's last map before global pooling
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def cat(one_torch_thread):
    """(LoadedModel, InputImage, (1, 3, 224, 224) input, top-1 Target, Grad-CAM map 0..1 at 224 px)."""
    model = load_model("mobilenet_v2")
    image = from_array(data.chelsea(), "chelsea")
    x = prepare_input(image, model.preprocess, model.device).tensor
    with torch.no_grad():
        top = int(model.module.eval()(x).argmax())
    target = Target(class_index=top)
    cam = gradients.grad_cam(model.module, x, target, LAYER)[0, 0].numpy()
    return model, image, x, target, (cam - cam.min()) / (cam.max() - cam.min())


def photo_case(model, name: str):
    x = prepare_input(from_array(getattr(data, name)(), name), model.preprocess, model.device).tensor
    with torch.no_grad():
        target = Target(class_index=int(model.module(x).argmax()))
    return x, target, gradients.grad_cam(model.module, x, target, LAYER)[0, 0].numpy()


def test_imputation_equals_noisy_linear_imputer():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    rng = np.random.default_rng(3)
    image = rng.standard_normal((3, 40, 56)).astype(np.float32)
    relevance = rng.random((40, 56)).astype(np.float32)
    for percentile in (10, 50, 90):
        keep = (relevance < np.percentile(relevance, percentile)).astype(np.float32)
        theirs = NoisyLinearImputer(noise=0.0)(torch.from_numpy(image), torch.from_numpy(keep)).numpy()
        ours = impute(image, keep, noise=0.0)
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
        assert np.array_equal(ours[:, keep > 0.5], image[:, keep > 0.5])   # kept pixels untouched
    noisy = impute(image, keep, noise=0.01, rng=np.random.default_rng(0))
    assert 0.008 < np.std((noisy - ours)[:, keep < 0.5]) < 0.012   # ROAD's 0.01, on the removed pixels only


def test_road_equals_pytorch_grad_cam(cat):
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import (
        NoisyLinearImputer,
        ROADCombined,
        ROADLeastRelevantFirst,
        ROADMostRelevantFirst,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model, _, x, target, cam = cat
    percentiles = [20, 50, 80]
    module = model.module.eval()
    args = (x, cam[None].astype(np.float32), [ClassifierOutputTarget(target.class_index)], module)

    def quiet(kind, removal):
        def make(percentile):
            metric = kind(percentile)
            metric.perturbation = removal(percentile, NoisyLinearImputer(noise=0.0))
            return metric
        return make

    combined = ROADCombined(percentiles)
    combined.morf_averager.imputer = quiet(ROADMostRelevantFirst, RemoveMostRelevantFirst)
    combined.lerf_averager.imputer = quiet(ROADLeastRelevantFirst, RemoveLeastRelevantFirst)
    morf = combined.morf_averager(*args)[0]
    lerf = combined.lerf_averager(*args)[0]
    theirs = combined(*args)[0]
    curves, scores = faithfulness.road(module, x, target, cam, percentiles, noise=0.0)
    assert scores["road-morf"] == pytest.approx(morf, rel=1e-4, abs=1e-4)
    assert scores["road-lerf"] == pytest.approx(lerf, rel=1e-4, abs=1e-4)
    assert scores["road"] == pytest.approx(theirs, rel=1e-4, abs=1e-4)
    # the curves: p(target), 0 removed first, one stored frame per point, the 80th percentile's image
    # equal to the one their metric scored (as displayed)
    morf_curve = curves["road-morf"]
    assert morf_curve.fractions[0] == 0 and np.all(np.diff(morf_curve.fractions) > 0)
    assert morf_curve.frames.shape == (4, 224, 224, 3) and morf_curve.values[0] == pytest.approx(
        torch.softmax(module(x), 1)[0, target.class_index].item(), rel=1e-4)
    _, images = PerturbationConfidenceMetric(RemoveMostRelevantFirst(80, NoisyLinearImputer(noise=0.0)))(
        *args, return_visualization=True)
    expected = faithfulness.to_display(images[0], MEAN, STD)
    assert np.abs(morf_curve.frames[1].astype(int) - expected).max() <= 1


def straightforward(model, x, target, relevance, steps, fill, start):
    """Petsiuk et al., one image per forward: (deletion values, insertion values) of p(target)."""
    order = np.argsort(-relevance.ravel(), kind="stable")
    height, width = relevance.shape
    deletion, insertion = [], []
    for count in np.rint(np.linspace(0, height * width, steps + 1)).astype(int):
        chosen = np.zeros(height * width, dtype=bool)
        chosen[order[:count]] = True
        chosen = torch.from_numpy(chosen.reshape(1, 1, height, width))
        for images, values in (((fill, x), deletion), ((x, start), insertion)):
            with torch.no_grad():
                output = model(torch.where(chosen, *images))
            if target.layer is None:
                values.append(torch.softmax(output, 1)[0, target.class_index].item())
            else:
                values.append(gradients._score(model, torch.where(chosen, *images), target).item())
    if target.layer is not None:
        deletion, insertion = np.array(deletion) / deletion[0], np.array(insertion) / insertion[-1]
    return np.array(deletion), np.array(insertion)


def test_deletion_insertion_equal_a_straightforward_loop(cat):
    model, _, x, target, _ = cat
    module = model.module.eval()
    attribution = gradients.saliency(module, x, target)[0].numpy()
    relevance = ranking("saliency", attribution)
    black = ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1).expand_as(x)
    blurred = gaussian_blur(x, [11, 11], [5.0, 5.0])
    curves = faithfulness.deletion_insertion(module, x, target, relevance, steps=8, substrate="paper", batch=5)
    deletion, insertion = straightforward(module, x, target, relevance, 8, black, blurred)
    np.testing.assert_allclose(curves["deletion"].values, deletion, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(curves["insertion"].values, insertion, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(curves["deletion"].fractions, np.arange(9) / 8)
    assert curves["deletion"].auc() == pytest.approx(np.trapezoid(deletion, np.arange(9) / 8), rel=1e-4)
    # a channel target: its score over the unperturbed score, no softmax
    channel = Target(layer="features.16", channel=5)
    curves = faithfulness.deletion_insertion(module, x, channel, relevance, steps=3, substrate="mean colour")
    deletion, insertion = straightforward(module, x, channel, relevance, 3, torch.zeros_like(x), torch.zeros_like(x))
    np.testing.assert_allclose(curves["deletion"].values, deletion, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(curves["insertion"].values, insertion, rtol=1e-4, atol=1e-4)


def test_average_drop_and_increase_equal_torchcam(cat):
    from torchcam.methods import GradCAM
    from torchcam.metrics import ClassificationMetric
    model, _, x, _, _ = cat
    module = model.module.eval()
    drops = []
    needs_grad = x.clone().requires_grad_(True)   # the app's weights are frozen: torchcam needs a graph
    for class_index in (285, 281, 7):   # the top-1, a neighbour, a cock: some drop, some do not
        extractor = GradCAM(module, target_layer=LAYER)
        try:
            metric = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
            metric.update(needs_grad, class_idx=class_index)
            theirs = metric.summary()
            # the map their metric scores: Grad-CAM of the softmax output (logits_fn runs first)
            map_ = extractor(class_index, torch.softmax(module(needs_grad), dim=-1))[0][0].detach()
        finally:
            extractor.remove_hooks()
        drop, increase = faithfulness.average_drop_increase(module, x, Target(class_index=class_index), map_)
        assert drop == pytest.approx(theirs["avg_drop"], rel=1e-4, abs=1e-6)
        assert increase == theirs["conf_increase"]
        drops.append(drop)
    assert max(drops) > 0.05
    assert not has_hooks(module)


def test_a_random_map_scores_worse_than_grad_cam(cat):
    """Sanity, not a theorem. Measured here (MobileNetV2, 16 steps, paper substrate): on the cat,
    Grad-CAM beats a random map on insertion (0.72 vs 0.46) and ROAD (1.07 vs 0.06) but not on
    deletion (0.52 vs 0.01 for pixel noise, 0.19-0.26 for smooth 7x7 noise): blacking the centre
    of the cat leaves cat fur, and p(Egyptian cat) rises from 0.72 to 0.84 with 20 % removed.
    So deletion's direction is checked on the coffee photo against the reversed map."""
    model, _, x, target, cam = cat
    module = model.module.eval()
    noise = np.random.default_rng(0).random(cam.shape).astype(np.float32)
    ours = faithfulness.deletion_insertion(module, x, target, cam, steps=16)
    chance = faithfulness.deletion_insertion(module, x, target, noise, steps=16)
    assert ours["insertion"].auc() > chance["insertion"].auc() + 0.1
    assert faithfulness.road(module, x, target, cam, (20, 50, 80))[1]["road"] > \
        faithfulness.road(module, x, target, noise, (20, 50, 80))[1]["road"] + 0.5
    coffee, coffee_target, coffee_cam = photo_case(model, "coffee")
    ours = faithfulness.deletion_insertion(module, coffee, coffee_target, coffee_cam, steps=16)
    reverse = faithfulness.deletion_insertion(module, coffee, coffee_target, -coffee_cam, steps=16)
    assert ours["deletion"].auc() + 0.2 < reverse["deletion"].auc()
    assert ours["insertion"].auc() > reverse["insertion"].auc() + 0.1


def test_evaluate_result_frames_cancel_and_model_unchanged(cat):
    model, image, x, target, _ = cat
    module = model.module
    module.train()   # the app's model is in eval mode; this one must come back training
    flags = {name: p.requires_grad for name, p in module.named_parameters()}
    before = {name: value.clone() for name, value in module.state_dict().items()}
    try:
        workbench = Workbench()
        result = workbench.gradient(model, image, "grad-cam", target)
        found = faithfulness.evaluate_result(workbench, model, image, result, steps=6, percentiles=(30, 70))
        assert set(found.scores) == {"deletion", "insertion", "road-morf", "road-lerf", "road", "average-drop",
                                     "increase-in-confidence"}
        assert "deletion AUC" in found.caption() and "(higher is better)" in found.caption()
        assert np.array_equal(found.frame("deletion", 0), found.display)
        assert np.array_equal(found.frame("deletion", 6), found.substrates["deletion"])
        assert np.array_equal(found.frame("insertion", 0), found.substrates["insertion"])
        assert np.array_equal(found.frame("insertion", 6), found.display)
        assert np.array_equal(found.frame("road-morf", 0), found.display)
        assert found.substrates["deletion"].max() == 0   # paper: deletion fills black
        assert found.order.dtype == np.int32 and found.order.size == 224 * 224
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(Cancelled):
            faithfulness.deletion_insertion(module, x, target, result.attribution[0], cancel=cancel)
        with pytest.raises(Cancelled):
            faithfulness.road(module, x, target, result.attribution[0], cancel=cancel)
        assert module.training and all(m.training for m in module.modules())
        assert {name: p.requires_grad for name, p in module.named_parameters()} == flags
        assert not has_hooks(module)
        after = module.state_dict()
        assert all(torch.equal(before[name], after[name]) and before[name].stride() == after[name].stride()
                   for name in before)
    finally:
        module.eval()


def test_ranking_composite_and_steps():
    attribution = np.array([[[1.0, -3.0]], [[2.0, 0.5]], [[-4.0, 0.5]]], dtype=np.float32)   # (3, 1, 2)
    assert np.array_equal(ranking("saliency", attribution), [[4.0, 3.0]])
    assert np.array_equal(ranking("integrated-gradients", attribution), [[-1.0, -2.0]])
    assert np.array_equal(ranking("smoothgrad", attribution, {"base": "input-x-gradient"}), [[-1.0, -2.0]])
    assert np.array_equal(ranking("smoothgrad", attribution, {"base": "guided-backprop"}), [[4.0, 3.0]])
    assert np.array_equal(ranking("grad-cam", attribution[:1]), [[1.0, -3.0]])
    assert np.array_equal(pixel_order(np.array([[0.2, 0.9], [0.2, 0.5]])), [1, 3, 0, 2])
    assert np.array_equal(step_counts(10, 4), [0, 2, 5, 8, 10])
    assert trapezoid(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 0.5
    display = np.full((1, 2, 3), 200, np.uint8)
    fill = np.zeros_like(display)
    assert composite(display, fill, np.array([1, 0]), 1, "deletion")[0, :, 0].tolist() == [200, 0]
    assert composite(display, fill, np.array([1, 0]), 1, "insertion")[0, :, 0].tolist() == [0, 200]


def test_a_random_resnet_and_a_one_channel_model():
    """Other architectures, random weights (costs and plumbing do not depend on them): a ResNet's
    in-place ReLUs and residual adds through the folded copy, and a luma model's black substrate."""
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    relevance = torch.rand(64, 64).numpy()
    black = ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1).expand_as(x)
    for target in (Target(class_index=7), Target(layer="layer3", channel=2)):
        curves = faithfulness.deletion_insertion(resnet, x, target, relevance, steps=4, substrate="black")
        deletion, insertion = straightforward(resnet, x, target, relevance, 4, black, black)
        np.testing.assert_allclose(curves["deletion"].values, deletion, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(curves["insertion"].values, insertion, rtol=1e-4, atol=1e-5)
    luma = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    fills = faithfulness.substrate_tensors("black", torch.zeros(1, 1, 8, 8), MEAN, STD)
    assert faithfulness.to_display(fills["deletion"][0], MEAN, STD).max() == 0
    curves = faithfulness.deletion_insertion(luma, torch.randn(1, 1, 8, 8), Target(class_index=1), np.eye(8),
                                             steps=2, substrate="black", mean=MEAN, std=STD)
    black_luma = torch.full((1, 1, 8, 8), -sum(MEAN) / sum(STD))   # 0 normalised as prepare_input does
    with torch.no_grad():
        expected = torch.softmax(luma(black_luma), 1)[0, 1].item()
    assert curves["deletion"].values[-1] == pytest.approx(expected, rel=1e-5)
    assert curves["insertion"].values[0] == pytest.approx(expected, rel=1e-5)
