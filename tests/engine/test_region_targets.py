"""Issue 25, "explain a region": every gradient view and the faithfulness scores take a class map's
region as their target (Seg-Grad-CAM, Vinogradova et al. 2020: the class's scores summed over the
region). Real MobileNetV2 (offline ImageNet weights) made fully convolutional on a 224-px square
(a 7×7 class map), the cat photo; pytorch-grad-cam is the test-only oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from cnnviewer.engine.attribution.base import _score
from cnnviewer.engine.attribution.scorer import Scorer, model_scores
from cnnviewer.engine.attribution.target import METHODS, Target, box_positions
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.segmentation.fully_convolutional import fully_convolutional_model
from cnnviewer.engine.workbench import Workbench

EGYPTIAN_CAT = 285
BOX = (0.05, 0.1, 0.55, 0.6)          # fractions (y0, x0, y1, x1) of the crop: the cat's head
OTHER_BOX = (0.6, 0.5, 1.0, 1.0)      # the lower right: body and background
QUICK = {"integrated-gradients": {"steps": 8}, "smoothgrad": {"samples": 3},
         "score-cam": {"layer": "features.3.conv.2"},          # 24 channels: 24 masked passes
         "occlusion": {"patch": 56, "stride": 56}}


@pytest.fixture(scope="module")
def setup(one_torch_thread):
    model = fully_convolutional_model(load_model("mobilenet_v2"), side=224)
    image = InputImage(np.ascontiguousarray(data.chelsea()), "chelsea", (451, 300))
    return model, image, Workbench()


def state(module: torch.nn.Module) -> tuple:
    return ([m.training for m in module.modules()], [p.requires_grad for p in module.parameters()],
            has_hooks(module))


def test_every_method_explains_the_box_not_the_whole_map(setup):
    model, image, workbench = setup
    before = state(model.module)
    for method in METHODS:
        options = QUICK.get(method, {})
        boxed = workbench.gradient(model, image, method, Target(class_index=EGYPTIAN_CAT, box=BOX), **options)
        whole = workbench.gradient(model, image, method, Target(class_index=EGYPTIAN_CAT), **options)
        assert boxed.attribution.shape[-2:] == (224, 224) and np.isfinite(boxed.attribution).all(), method
        assert np.abs(boxed.attribution).max() > 0, method
        if method == "eigen-cam":       # class-agnostic: no target, the same map
            np.testing.assert_array_equal(boxed.attribution, whole.attribution)
        else:
            assert not np.allclose(boxed.attribution, whole.attribution, rtol=1e-3, atol=1e-6), method
    assert state(model.module) == before


def test_a_box_target_is_the_sum_over_its_positions(setup):
    """box= scales to the map's positions: the same score as region= in positions, and the class's
    logits summed there (the scorer's raw score too)."""
    model, image, _ = setup
    inputs = prepare_input(image, model.preprocess, model.device).tensor
    with torch.no_grad():
        output = model.module(inputs)
    region = box_positions(BOX, *output.shape[-2:])
    assert region == (0, 0, 4, 5)
    expected = output[0, EGYPTIAN_CAT, 0:4, 0:5].sum()
    for target in (Target(class_index=EGYPTIAN_CAT, box=BOX), Target(class_index=EGYPTIAN_CAT, region=region)):
        with torch.no_grad():
            torch.testing.assert_close(_score(model.module, inputs, target)[0], expected)
            raw, probability = model_scores(model.module, inputs, target)
        assert raw[0] == pytest.approx(float(expected), rel=1e-5)
        mean_p = torch.softmax(output, dim=1)[0, EGYPTIAN_CAT, 0:4, 0:5].mean()
        assert probability[0] == pytest.approx(float(mean_p), rel=1e-5)
    whole_raw, _ = model_scores(model.module, inputs, Target(class_index=EGYPTIAN_CAT))
    assert whole_raw[0] == pytest.approx(float(output[0, EGYPTIAN_CAT].sum()), rel=1e-5)


def test_grad_cam_of_a_box_equals_pytorch_grad_cam(setup):
    """Grad-CAM of the box target = pytorch-grad-cam's GradCAM + SemanticSegmentationTarget with the
    box's positions as the mask (1e-5), at the layer's resolution and upsampled alike."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from cnnviewer.engine.attribution.gradients import grad_cam

    model, image, _ = setup
    net = model.module
    inputs = prepare_input(image, model.preprocess, model.device).tensor
    layer = "features.18.2"
    ours = grad_cam(net, inputs, Target(class_index=EGYPTIAN_CAT, box=BOX), layer, upsample=False)[0, 0]
    y0, x0, y1, x1 = box_positions(BOX, 7, 7)
    mask = np.zeros((7, 7), np.float32)
    mask[y0:y1, x0:x1] = 1
    target = SemanticSegmentationTarget(EGYPTIAN_CAT, mask)
    with GradCAM(model=net, target_layers=[net.get_submodule(layer)]) as cam:
        cam.compute_input_gradient = False
        outputs = cam.activations_and_grads(inputs.clone().requires_grad_(True))   # the weights are frozen
        net.zero_grad()
        sum(target(o) for o in outputs).backward()
        activation = cam.activations_and_grads.activations[0]
        gradient = cam.activations_and_grads.gradients[0]
        theirs = cam.get_cam_image(inputs, net.get_submodule(layer), [target], activation.cpu().numpy(),
                                   gradient.cpu().numpy(), False)[0]
    np.testing.assert_allclose(ours.detach().numpy(), np.maximum(theirs, 0), rtol=1e-4, atol=1e-5)
    other = grad_cam(net, inputs, Target(class_index=EGYPTIAN_CAT, box=OTHER_BOX), layer, upsample=False)[0, 0]
    assert not torch.allclose(other, ours, rtol=1e-2, atol=1e-3)
    assert not has_hooks(net)


def test_faithfulness_scores_the_region(setup):
    """The same saliency map scored for two regions: the perturbation curves follow the class's
    probability over the region, so moving the region changes the scores; the unperturbed point is
    the class's mean probability over the region."""
    from cnnviewer.engine.attribution.faithfulness import evaluate_result

    model, image, workbench = setup
    before = state(model.module)
    found = {}
    for name, box in (("head", BOX), ("body", OTHER_BOX)):
        target = Target(class_index=EGYPTIAN_CAT, box=box)
        result = workbench.gradient(model, image, "saliency", target)
        found[name] = evaluate_result(workbench, model, image, result, metrics=("deletion", "insertion"), steps=8)
        inputs = prepare_input(image, model.preprocess, model.device).tensor
        with torch.no_grad():
            probabilities = torch.softmax(model.module(inputs), dim=1)[0, EGYPTIAN_CAT]
        y0, x0, y1, x1 = box_positions(box, 7, 7)
        assert found[name].curves["deletion"].values[0] == pytest.approx(
            float(probabilities[y0:y1, x0:x1].mean()), rel=1e-3)
    assert found["head"].scores["deletion"] != pytest.approx(found["body"].scores["deletion"], rel=1e-3)
    assert found["head"].scores["insertion"] != pytest.approx(found["body"].scores["insertion"], rel=1e-3)
    assert state(model.module) == before


def test_the_traced_scorer_scores_the_region_as_the_model_does(setup):
    """The Scorer's traced copy keeps the class map's shape, so a region target is scored there too."""
    model, image, _ = setup
    inputs = prepare_input(image, model.preprocess, model.device).tensor
    batch = torch.cat([inputs, inputs.flip(-1)])
    target = Target(class_index=EGYPTIAN_CAT, box=BOX)
    scorer = Scorer(model.module, token=model.token, trace=True, trace_from=1)
    scorer.begin_map()
    raw, probability = scorer.scores(batch, target)
    assert scorer.kind == "traced", scorer.fallback
    with torch.no_grad():
        expected_raw, expected_p = model_scores(model.module, batch, target)
    np.testing.assert_allclose(raw, expected_raw, rtol=1e-3)
    np.testing.assert_allclose(probability, expected_p, rtol=1e-3)
    assert abs(raw[0] - raw[1]) > 1e-3      # the flipped image's region holds another part of the cat


def test_a_cell_made_into_fractions_comes_back_as_that_one_cell() -> None:
    """row / h and (row + 1) / h in floating point: every cell of every map size up to 600 comes back
    as itself (int() and ceil turned 14 cells of a 448-wide map into 2×2 regions)."""
    for size in range(1, 600):
        for row in range(size):
            assert box_positions((row / size, row / size, (row + 1) / size, (row + 1) / size), size, size) \
                == (row, row, row + 1, row + 1), (size, row)
