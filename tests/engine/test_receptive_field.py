"""Effective receptive fields lie inside the theoretical box and follow the clicked neuron."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torchvision

from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models.catalogue import load_torchvision_model
from cnnviewer.engine.models.handle import wrap_module
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.structure.receptive_field import GradientProbe
from cnnviewer.engine.structure.summary_graph import summarize

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")


@pytest.fixture(scope="module")
def mobilenet():
    return load_torchvision_model("mobilenet_v2")


@pytest.mark.parametrize(("layer", "neuron"), [("features.3", (28, 28)), ("features.7", (3, 10)),
                                               ("features.0.0", (0, 0))])
def test_effective_field_lies_inside_the_theoretical_box(mobilenet, layer, neuron):
    summary = summarize(mobilenet.module, (224, 224))
    probe = GradientProbe()
    result = probe.field(mobilenet, sample_image("chelsea"), layer, neuron, None, summary.field(layer))
    extent = result.effective_extent
    assert extent is not None
    top, left, bottom, right = result.box
    assert extent[0] >= np.floor(top) and extent[1] >= np.floor(left)
    assert extent[2] <= np.ceil(bottom) and extent[3] <= np.ceil(right)
    assert result.effective.shape == (224, 224) and result.effective.max() == pytest.approx(1.0)
    assert not has_hooks(mobilenet.module)
    assert not any(p.requires_grad for p in mobilenet.module.parameters())


def test_the_field_moves_with_the_neuron_and_reuses_the_graph(mobilenet):
    summary = summarize(mobilenet.module, (224, 224))
    probe = GradientProbe()
    image = sample_image("coffee")
    left = probe.field(mobilenet, image, "features.4", (14, 3), 5, summary.field("features.4"))
    right = probe.field(mobilenet, image, "features.4", (14, 24), 5, summary.field("features.4"))
    assert left.effective_extent[1] < right.effective_extent[1]
    assert right.box[1] - left.box[1] == pytest.approx(21 * summary.field("features.4").jump[1])
    assert probe._key is not None                 # the forward graph was kept for the second click


def test_a_training_model_is_left_as_it_was():
    model = torchvision.models.resnet18(weights=None).train()
    loaded = wrap_module(model, "resnet18", device="cpu")
    model.train()                                  # wrap_module put it in eval; the user's mode is train
    summary = summarize(model, (224, 224))
    running = model.bn1.running_mean.clone()
    GradientProbe().field(loaded, sample_image(), "layer1", (10, 10), None, summary.field("layer1"))
    assert model.training and model.bn1.training
    assert (model.bn1.running_mean == running).all()
