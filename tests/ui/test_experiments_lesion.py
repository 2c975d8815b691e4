"""The lesion tab on the real MobileNetV2: a study over a small folder of real photos draws one bar per
residual block (grey for those that cannot be skipped, with their reason on hover) and the random-deletion
curve; Cancel leaves no stale view; a new model clears the result; the model is left exactly as found."""

from __future__ import annotations

import pytest
from PIL import Image
from skimage import data

from cnnviewer.engine.jobs import JobRunner
from cnnviewer.engine.session import Session
from cnnviewer.ui.controller import Controller
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.experiments.lesion import JOB_KEY, LesionTab


@pytest.fixture
def tab(qtbot):
    session = Session()
    jobs = UiJobs(JobRunner(torch_threads=1))
    controller = Controller(session, jobs)
    tab = LesionTab(session, jobs, controller)
    qtbot.addWidget(tab)
    tab.resize(420, 700)
    tab.show()
    controller.load_model("mobilenet_v2")
    controller.open_sample("chelsea")
    qtbot.waitUntil(lambda: session.model is not None and session.image is not None, timeout=30000)
    yield tab
    jobs.runner.close()


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "Egyptian_cat").mkdir()
    (tmp_path / "espresso").mkdir()
    Image.fromarray(data.chelsea()).save(tmp_path / "Egyptian_cat" / "chelsea.png")
    Image.fromarray(data.coffee()).save(tmp_path / "espresso" / "coffee.png")
    return tmp_path


def model_state(module):
    from cnnviewer.engine.runtime.hooks import has_hooks
    return (has_hooks(module), [m.training for m in module.modules()],
            [p.requires_grad for p in module.parameters()],
            float(sum(p.double().sum() for p in module.parameters())))


def test_runs_on_a_folder_and_draws_real_numbers(qtbot, tab, folder):
    module = tab._session.model.module
    before = model_state(module)
    assert tab.result_json() is None
    tab.set_folder(folder)
    tab.random.setValue(2)
    tab.repeats.setValue(2)
    tab.run_button.click()
    assert tab.cancel_button.isEnabled() and not tab.run_button.isEnabled()
    qtbot.waitUntil(lambda: tab.result is not None, timeout=60000)
    result = tab.result
    assert result.images == (str(folder / "Egyptian_cat" / "chelsea.png"), str(folder / "espresso" / "coffee.png"))
    assert result.intact_accuracy == 1.0        # subfolder names gave the classes, and the model is right
    heights = tab.bar_heights()
    assert len(heights) == 17 and sum(h is not None for h in heights) == 10
    assert all(h in (0.0, 0.5, 1.0) for h in heights if h is not None)   # two images: real shares
    bars = [item for item in tab.bar_plot.getPlotItem().items if type(item).__name__ == "BarGraphItem"]
    assert len(bars) == 3       # grey (cannot be deleted), agreement, accuracy
    assert [float(v) for v in tab.agreement_bars.opts["height"]] == [h for h in heights if h is not None]
    assert [float(v) for v in tab.agreement_bars.opts["x"]] == [i - 0.2 for i, h in enumerate(heights) if h is not None]
    assert [float(v) for v in tab.grey_bars.opts["x"]] == [i for i, h in enumerate(heights) if h is None]
    grey = tab.hover_text(3)
    assert grey.startswith("features.4") and "cannot be deleted" in grey and "56→28" in grey
    live = tab.hover_text(2)
    assert live.startswith("features.3") and "unchanged" in live and "accuracy" in live
    point = tab.bar_plot.getViewBox().mapViewToScene(pg_point(3, 0.5))
    tab._on_bar_hover(point)
    assert tab.bar_plot.toolTip() == grey
    saved = tab.result_json()
    assert saved["images"] == 2 and [r["count"] for r in saved["random"]] == [1, 2]
    assert tab.result_picture() is tab.plots and tab.plots.isVisible()
    assert "blocks deletable" in tab.info.text() and f"over the folder {folder.name}" in tab.info.text()
    assert model_state(module) == before

    tab._session.set_model(tab._session.model)     # a new model: the result is stale
    assert tab.result is None and "run again" in tab.info.text()


def test_cancel_leaves_no_stale_view(qtbot, tab, folder):
    tab.set_folder(folder)
    tab.random.setValue(6)
    tab.repeats.setValue(20)
    tab.run_button.click()
    qtbot.waitUntil(lambda: tab._jobs.runner.running() == JOB_KEY, timeout=30000)
    tab.cancel_button.click()
    assert not tab._running and tab.result is None and tab.run_button.isEnabled()
    assert "Cancelled" in tab.info.text()
    qtbot.waitUntil(lambda: not tab._jobs.runner.is_busy(), timeout=30000)
    qtbot.wait(200)
    assert tab.result is None and tab.result_json() is None
    from cnnviewer.engine.runtime.hooks import has_hooks
    assert not has_hooks(tab._session.model.module) and not tab._session.model.module.training


def test_the_current_image_alone_without_a_folder(qtbot, tab):
    tab.random.setValue(0)
    tab.run_button.click()
    qtbot.waitUntil(lambda: tab.result is not None, timeout=60000)
    assert len(tab.result.images) == 1 and tab.result.random == ()
    assert tab.result.intact_accuracy is None
    assert all(h in (0.0, 1.0) for h in tab.bar_heights() if h is not None)
    tab._controller.open_sample("coffee")          # the study was of the image: now stale
    qtbot.waitUntil(lambda: tab.result is None, timeout=30000)
    assert "run again" in tab.info.text()


def pg_point(x: float, y: float):
    from PySide6.QtCore import QPointF
    return QPointF(x, y)
