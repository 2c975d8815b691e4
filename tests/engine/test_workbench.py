"""The workbench headless: every panel's question answered from one recorded pass, the model untouched.

Real MobileNetV2 weights (the offline pack) and the chelsea photo; no Qt.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import ViewError
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.views.features import FeatureMapOptions
from cnnviewer.engine.workbench import Workbench

CAT_INDICES = range(281, 286)


@pytest.fixture(scope="module")
def mobilenet():
    return load_model("mobilenet_v2")


@pytest.fixture(scope="module")
def chelsea():
    return sample_image("chelsea")


def test_forward_feature_maps_and_filters_share_one_pass(mobilenet, chelsea, monkeypatch):
    workbench = Workbench()
    summary = workbench.forward(mobilenet, chelsea)
    assert mobilenet.trained and summary.predictions[0].index in CAT_INDICES
    assert len(summary.predictions) == 5 and summary.display.shape == (224, 224, 3)
    calls = []
    monkeypatch.setattr(mobilenet.module, "forward", lambda *a: calls.append(a))   # any new pass would show here
    view = workbench.feature_maps(mobilenet, chelsea, "features.4", FeatureMapOptions(sort="max"))
    assert view.values.shape == (32, 28, 28) and view.layout.count == 32
    assert view.layout.order[0] == int(np.argmax(view.channel_max))
    first, selected = workbench.filters(mobilenet, "features.4", 3)
    assert first.rgb and first.layout.count == 32 and first.stats.shape == (32, 3, 3, 3)
    assert selected.layer == "features.4.conv.2" and selected.output_channel == 3 and selected.matches_layer
    assert calls == []
    with pytest.raises(ViewError, match="no tensor output"):
        workbench.feature_maps(mobilenet, chelsea, "no.such.layer")


def test_summary_architecture_and_fields_are_computed_once_per_model(mobilenet, chelsea):
    workbench = Workbench()
    workbench.forward(mobilenet, chelsea)
    assert workbench.summary(mobilenet) is workbench.summary(mobilenet)
    graph = workbench.architecture(mobilenet)
    assert graph is workbench.architecture(mobilenet) and len(graph.nodes) > 100
    field, picture = workbench.neuron_field(mobilenet, chelsea, "features.4", None, 0)
    assert field.neuron == (14, 14) and picture.shape == (28, 28, 3)              # the layer's centre
    assert field.effective.shape == (224, 224) and field.effective.max() == pytest.approx(1.0)
    with pytest.raises(ViewError, match="no spatial map"):
        workbench.neuron_field(mobilenet, chelsea, "classifier.1", None, None)


@pytest.mark.parametrize("method", ["saliency", "guided-backprop", "grad-cam", "occlusion"])
def test_gradient_views_leave_the_model_as_found(mobilenet, chelsea, method):
    workbench = Workbench()
    top = workbench.forward(mobilenet, chelsea).predictions[0].index
    flags = [p.requires_grad for p in mobilenet.module.parameters()]
    result = workbench.gradient(mobilenet, chelsea, method, Target(class_index=top),
                                **({"stride": 56} if method == "occlusion" else {}))
    assert result.attribution.shape[1:] == (224, 224) and np.isfinite(result.attribution).all()
    assert np.abs(result.attribution).max() > 0
    if method == "grad-cam":
        assert result.options["layer"] == "features.18.2"    # the last layer with spatial maps: its ReLU6
    assert [p.requires_grad for p in mobilenet.module.parameters()] == flags
    assert not has_hooks(mobilenet.module) and not mobilenet.module.training
    assert torch.is_inference_mode_enabled() is False
