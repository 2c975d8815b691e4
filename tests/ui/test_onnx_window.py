"""ONNX files in the window: a drop loads one (and it reopens at the next launch), a drop on Compare makes it
model B, a bad one keeps the previous model. MobileNetV2's real weights, exported in the test."""

from __future__ import annotations

import warnings

import pytest
import torch

from cnnviewer.ui.app import startup_model
from cnnviewer.ui.main_window import WEIGHTS_FILTER
from tests.ui.conftest import drop_files


@pytest.fixture
def exported(window, tmp_path):
    """The window's own MobileNetV2, exported by torch's legacy ONNX exporter, and a truncated copy."""
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(window.session.model.module, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False)
    whole = path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(whole[: len(whole) // 2])
    return path


def test_dropping_an_onnx_file_loads_it_and_it_reopens_at_launch(window, qtbot, settings, exported):
    assert "*.onnx" in WEIGHTS_FILTER.split(";;")[0]     # File > Load weights lists it too
    before = [p.index for p in window.predictions.predictions]
    drop_files(window.feature_maps.canvas.viewport(), [exported])
    qtbot.waitUntil(lambda: window.session.model.name == "net.onnx", timeout=30000)
    qtbot.waitUntil(lambda: "net.onnx" in window.predictions.title.text() and window.predictions.predictions != (),
                    timeout=20000)
    assert [p.index for p in window.predictions.predictions] == before
    assert window.windowTitle().startswith("cnnviewer — net.onnx")
    window.session.select(layer="features.3.conv.0.2", channel=0)       # the torch model's names
    qtbot.waitUntil(lambda: window.feature_maps.view is not None
                    and window.feature_maps.view.layer == "features.3.conv.0.2", timeout=20000)
    assert settings.value("last_weights") == str(exported)
    assert startup_model(None, None, settings) == (str(exported), None, "")


def test_a_bad_onnx_file_keeps_the_model_and_compare_takes_a_good_one(window, qtbot, exported):
    model, top = window.session.model, window.predictions.predictions
    drop_files(window.feature_maps.canvas.viewport(), [exported.with_name("cut.onnx")])
    qtbot.waitUntil(lambda: "Model not changed" in window.statusBar().currentMessage(), timeout=20000)
    assert "cut.onnx is not an ONNX model, or is truncated" in window.statusBar().currentMessage()
    assert window.session.model is model and window.predictions.predictions == top
    drop_files(window.compare, [exported])
    qtbot.waitUntil(lambda: window.compare.other is not None, timeout=30000)
    assert window.compare.other.name == "net.onnx" and window.session.model is model
