"""The Experiments panel's probe tab over a real session and job thread, the real MobileNetV2 and the cat:
a run draws real numbers, hovering says why, clicking selects the layer, Cancel leaves nothing stale, a
new image clears the plot, a folder gives its mean and Zhang's consistency, and the model is unchanged."""

from __future__ import annotations

import os

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF
from skimage import data

from cnnviewer.engine.jobs import JobRunner
from cnnviewer.engine.session import Session
from cnnviewer.ui.controller import Controller
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.experiments.probe import ProbeTab, parse_amounts


@pytest.fixture
def tab(qtbot):
    session = Session()
    jobs = UiJobs(JobRunner(torch_threads=1))
    controller = Controller(session, jobs)
    tab = ProbeTab(session, jobs, controller)
    qtbot.addWidget(tab)
    tab.resize(420, 600)
    tab.show()
    controller.load_model("mobilenet_v2")
    controller.open_sample("chelsea")
    qtbot.waitUntil(lambda: session.model is not None and session.image is not None, timeout=60000)
    yield tab
    jobs.runner.close()


def run_and_wait(qtbot, tab, amounts: str) -> None:
    tab.amounts.setText(amounts)
    tab.run_button.click()
    qtbot.waitUntil(lambda: not tab._running, timeout=60000)


def test_run_hover_click_cancel_and_a_new_image(qtbot, tab):
    tab.with_consistency.setChecked(False)
    tab.layer_choice.setCurrentIndex(tab.layer_choice.findData("all"))
    assert tab.result_json() is None
    run_and_wait(qtbot, tab, "2 4")
    result = tab.result
    assert result is not None, tab.info.text()
    assert result.amounts == (2.0, 4.0) and len(result.layers) > 100
    first = result.layers.index("features.0.0")
    assert result.equivariance[first, 0] <= 1e-5 and math.isfinite(result.invariance[first, 0])
    items = tab.plot.getPlotItem().listDataItems()
    assert len(items) == 3
    error, pooled = items[0].getData()[1], items[1].getData()[1]
    assert len(error) == len(result.layers) and np.all(np.isfinite(pooled))
    assert 20 < np.isfinite(error).sum() < len(error)   # 2 and 4 px are whole steps only up to jump 4
    # hovering a layer names it and says why
    view = tab.plot.getPlotItem().vb
    tab._on_mouse_moved(view.mapViewToScene(QPointF(first, 0.5)))
    assert "features.0.0" in tab.hover.text() and "stride 2" in tab.hover.text()
    # a click selects it in the session
    tab.select_layer(first)
    assert tab._session.selection.layer == "features.0.0"
    saved = tab.result_json()
    assert saved["layers"] == list(result.layers) and saved["equivariance_error"][first][0] is not None
    assert tab.result_picture() is tab.picture
    # Cancel: nothing stale is left
    tab.amounts.setText("")
    tab.run_button.click()
    assert tab._running and tab.cancel_button.isEnabled()
    tab.cancel_button.click()
    qtbot.waitUntil(lambda: not tab._running, timeout=30000)
    assert tab.result is None and "Cancelled" in tab.info.text()
    assert tab.plot.getPlotItem().listDataItems() == []
    # a new image clears a shown result
    run_and_wait(qtbot, tab, "2")
    assert tab.result is not None
    tab._controller.open_sample("coffee")
    qtbot.waitUntil(lambda: tab.result is None, timeout=30000)
    assert "run the probe again" in tab.info.text()
    # the model is as it was
    from cnnviewer.engine.runtime.hooks import has_hooks
    module = tab._session.model.module
    assert not has_hooks(module) and not module.training
    assert not any(p.requires_grad for p in module.parameters())


def test_folder_mean_and_consistency(qtbot, tab, tmp_path):
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(data, name)()).save(tmp_path / f"{name}.png")
    assert not tab.source.model().item(1).isEnabled()
    tab.set_folder(Path(tmp_path))
    tab.source.setCurrentIndex(1)
    tab.transform.setCurrentIndex(tab.transform.findData("flip"))
    run_and_wait(qtbot, tab, "")
    assert tab.result is not None, tab.info.text()
    assert tab.result.image.startswith("2 images") and tab.result.transform == "flip"
    assert tab.consistency is not None and tab.consistency.pairs == 10
    assert "Consistency (Zhang 2019)" in tab.consistency_label.text()
    assert tab.result_json()["consistency"]["value"] == tab.consistency.value


def test_amounts_are_parsed_or_refused():
    assert parse_amounts(" 1, 2 4.5") == (1.0, 2.0, 4.5)
    assert parse_amounts("") is None
    with pytest.raises(ValueError, match="not a list of numbers"):
        parse_amounts("1 two")


def test_blocks_are_one_point_per_block():
    """The default layer set: MobileNetV2's 19 feature blocks and its classifier; ResNet's stem, blocks and head."""
    from torchvision.models import mobilenet_v2, resnet18

    from cnnviewer.ui.panels.experiments.probe import block_layers
    names = tuple(name for name, _ in mobilenet_v2().named_modules())      # random weights: only names matter
    assert block_layers(names) == [f"features.{i}" for i in range(19)] + ["classifier.0", "classifier.1"]
    names = tuple(name for name, _ in resnet18().named_modules())
    assert block_layers(names)[:6] == ["conv1", "bn1", "relu", "maxpool", "layer1.0", "layer1.1"]
    assert block_layers(names)[-2:] == ["avgpool", "fc"]
