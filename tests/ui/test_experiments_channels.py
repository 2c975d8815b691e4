"""The Channels tab on real MobileNetV2 and the cat: ranks the selected layer's channels with the engine's
numbers, a row or a bar selects the channel everywhere, Knock out reaches the controller when it offers
it, Cancel leaves no stale view, a new image clears the result, and the model is left as found."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from cnnviewer.engine.experiments.ablate_spec import Knockout
from cnnviewer.engine.jobs import JobRunner
from cnnviewer.engine.session import Session
from cnnviewer.ui.controller import Controller
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.experiments.channels import ChannelsTab

LAYER = "features.16.conv.2"     # 160 channels at 7x7 near the end: the smallest real case


@pytest.fixture
def tab(qtbot):
    session = Session()
    jobs = UiJobs(JobRunner(torch_threads=1))
    controller = Controller(session, jobs)
    tab = ChannelsTab(session, jobs, controller)
    qtbot.addWidget(tab)
    tab.resize(420, 700)
    tab.show()
    controller.load_model("mobilenet_v2")
    controller.open_sample("chelsea")
    qtbot.waitUntil(lambda: session.forward is not None, timeout=60000)
    yield tab
    jobs.runner.close()


def model_state(module) -> tuple:
    return (tuple(m.training for m in module.modules()), tuple(p.requires_grad for p in module.parameters()))


def test_ranks_selects_and_knocks_out(tab, qtbot, monkeypatch):
    from cnnviewer.engine.runtime.hooks import has_hooks

    session = tab._session
    before = model_state(session.model.module)
    session.select(layer=LAYER)
    assert LAYER in tab.layer_label.text() and "160 channels" in tab.layer_label.text()
    assert "class 285 (Egyptian cat)" in tab.target_label.text()
    assert tab.result_json() is None
    qtbot.mouseClick(tab.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.result is not None, timeout=60000)
    result = tab.result
    assert result.layer == LAYER and result.target == "class 285" and result.channels == 160
    assert tab.table.rowCount() == 160 and not tab.cancel_button.isEnabled()
    best = int(result.order[0])
    assert int(tab.table.item(0, 0).text()) == best
    assert float(tab.table.item(0, 1).text()) == pytest.approx(result.drops[best], rel=1e-3)
    assert float(tab.table.item(0, 2).text().split()[0]) == pytest.approx(100 * result.drops[best] / result.intact,
                                                                         abs=0.06)
    np.testing.assert_array_equal(tab.bars.opts["height"], result.drops)
    assert f"Channel {best} matters most" in tab.info.text()
    found = tab.result_json()
    assert found["model"] == "mobilenet_v2" and found["target_description"] == "class 285 (Egyptian cat)"
    assert len(found["drops"]) == 160 and tab.result_picture() is tab.results

    # the same numbers as the engine called directly (the job thread is idle now)
    import torch

    from cnnviewer.engine.attribution.target import Target
    from cnnviewer.engine.experiments.importance import channel_importance
    from cnnviewer.engine.runtime.inference import prepare_input
    model = session.model
    x = prepare_input(session.image, model.preprocess, model.device, model.dtype, 3).tensor
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = channel_importance(model, x, LAYER, Target(class_index=285))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(result.drops, again.drops, rtol=1e-6, atol=1e-6)

    # a row, then a bar, select the channel in every panel
    tab.table.cellClicked.emit(2, 0)
    assert session.selection.layer == LAYER and session.selection.channel == int(tab.table.item(2, 0).text())
    viewbox = tab.plot.getViewBox()
    target_channel = 37
    scene = viewbox.mapViewToScene(QPointF(target_channel, float(result.drops[target_channel]) / 2))
    spot = tab.plot.mapFromScene(scene)
    qtbot.mouseClick(tab.plot.viewport(), Qt.MouseButton.LeftButton, pos=spot)
    qtbot.waitUntil(lambda: session.selection.channel == target_channel, timeout=3000)
    brushes = tab.bars.opts["brushes"]
    assert brushes[target_channel].color().getRgb()[:3] != brushes[0].color().getRgb()[:3]

    # Knock out: disabled without add_knockout; with it, the chosen channels reach the controller
    tab.table.selectRow(0)
    assert tab.knock_button.isEnabled()
    intact, second = session.model, int(tab.table.item(1, 0).text())
    tab.table.clearSelection()
    flags = tab.table.selectionModel().SelectionFlag
    for row in (0, 1):
        tab.table.selectionModel().select(tab.table.model().index(row, 0), flags.Select | flags.Rows)
    assert tab.knock_button.isEnabled()
    qtbot.mouseClick(tab.knock_button, Qt.MouseButton.LeftButton)
    assert "Knocked out 2 channels" in tab.info.text()
    qtbot.waitUntil(lambda: session.model is not intact and session.forward is not None, timeout=30000)
    assert session.model.interventions == (Knockout(LAYER, (best, second)),)
    assert session.model.intact is intact and not has_hooks(intact.module)

    # a later layer's channel as the target: pin it, then rank an earlier layer
    session.select(layer="features.17", channel=5)
    qtbot.mouseClick(tab.pin_button, Qt.MouseButton.LeftButton)
    assert tab.target_kind.currentText() == "pinned channel" and "features.17 channel 5" in tab.target_label.text()
    session.select(layer=LAYER)
    qtbot.mouseClick(tab.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.result is not None, timeout=60000)
    assert tab.result.target == "features.17 channel 5" and tab.result.layer == LAYER
    session.select(layer="features.18")                  # after the target: the engine's one line shows
    qtbot.mouseClick(tab.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "computed before" in tab.info.text(), timeout=60000)
    assert tab.result is None and tab.run_button.isEnabled()
    assert not has_hooks(model.module) and model_state(model.module) == before


def test_cancel_and_a_new_image_leave_nothing_stale(tab, qtbot):
    from cnnviewer.engine.runtime.hooks import has_hooks

    session = tab._session
    before = model_state(session.model.module)
    session.select(layer="features.17.conv.0")       # 960 channels: 30 batches, time to cancel
    qtbot.mouseClick(tab.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.progress.value() > 0, timeout=60000)
    qtbot.mouseClick(tab.cancel_button, Qt.MouseButton.LeftButton)
    assert tab.result is None and tab.table.rowCount() == 0 and "Cancelled" in tab.info.text()
    assert tab.run_button.isEnabled() and not tab.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not tab._jobs.runner.is_busy(), timeout=30000)

    session.select(layer=LAYER)
    qtbot.mouseClick(tab.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.result is not None, timeout=60000)
    assert tab.result.layer == LAYER    # the cancelled run's result never arrives
    tab._controller.open_sample("coffee")
    qtbot.waitUntil(lambda: tab.result is None, timeout=30000)
    assert tab.table.rowCount() == 0 and "again" in tab.info.text()
    qtbot.waitUntil(lambda: session.forward is not None, timeout=60000)
    assert not has_hooks(session.model.module) and model_state(session.model.module) == before
