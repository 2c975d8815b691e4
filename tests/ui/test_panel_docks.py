"""Panels built when first shown (issue 22 §3: the window shows before any panel exists), and a
panel built late looks exactly as if it had been there all along."""

from __future__ import annotations

import pytest

from cnnviewer.engine.jobs import JobRunner
from cnnviewer.engine.session import Session
from cnnviewer.ui.panel_docks import catch_up, recorded_slots
from tests.ui.conftest import make_window

BEHIND_TABS = ("model_summary", "receptive_field", "architecture", "gradients", "faithfulness", "experiments",
               "live_detection",
               "compare", "dataset", "synthesis")


def test_only_the_panels_on_screen_are_built_and_a_raised_tab_builds_its_own(qtbot, settings):
    window = make_window(qtbot, settings)
    for key in window.docks:       # nothing before the window has shown
        assert key in ("predictions", "feature_maps", "filters") or window.panel_docks.built(key) is None
    qtbot.waitUntil(lambda: all(window.panel_docks.built(key) is not None
                                for key in ("predictions", "feature_maps", "filters")), timeout=5000)
    assert all(window.panel_docks.built(key) is None for key in BEHIND_TABS)
    window.docks["synthesis"].raise_()
    qtbot.waitUntil(lambda: window.panel_docks.built("synthesis") is not None, timeout=5000)
    assert window.docks["synthesis"].widget() is window.synthesis
    assert window.panel_docks.built("compare") is None
    window.close()                 # stopping live video and indexing builds neither panel
    assert window.panel_docks.built("live_detection") is None and window.panel_docks.built("dataset") is None


def test_a_panel_built_after_the_model_ran_catches_up(window, qtbot):
    """The session's model, image, selection and forward pass reach a late panel's slots once."""
    model = window.session.model
    window.session.select(class_index=281)          # "tabby" chosen before Gradients or Synthesis existed
    assert window.panel_docks.built("gradients") is None
    window.docks["gradients"].raise_()
    qtbot.waitUntil(lambda: window.panel_docks.built("gradients") is not None, timeout=5000)
    gradients = window.gradients
    assert gradients.class_box.count() == len(model.categories)
    assert gradients.class_box.currentIndex() == 281
    assert window.synthesis.class_picker.count() == len(model.categories)
    assert window.synthesis.class_picker.currentIndex() == 281
    # Still connected afterwards, like any panel: a new class reaches it.
    window.session.select(class_index=3)
    assert gradients.class_box.currentIndex() == 3
    window.docks["receptive_field"].raise_()
    receptive = window.receptive_field
    qtbot.waitUntil(lambda: receptive.result is not None, timeout=30000)   # fields need the recorded pass


def test_recording_puts_the_same_signals_back_and_replays_in_session_order():
    session = Session()
    real = session.model_changed
    seen: list[str] = []
    session.forward = "pass"
    session.model = "model"
    with recorded_slots(session) as slots:
        session.forward_changed.connect(lambda value: seen.append(f"forward {value}"))
        session.model_changed.connect(lambda: seen.append("model (no argument)"))
    assert session.model_changed is real
    catch_up(session, slots)
    assert seen == ["model (no argument)", "forward pass"]
    session.forward_changed.emit("again")          # the connection made while recording stays
    assert seen[-1] == "forward again"


def test_a_held_job_runner_runs_nothing_until_started_and_closes_unstarted():
    runner = JobRunner(torch_threads=None, start=False)
    ran: list[int] = []
    runner.submit("a", lambda _context: ran.append(1))
    runner.submit("b", lambda _context: ran.append(2))
    runner.submit("c", lambda _context: ran.append(3), first=True)   # jumps the queue
    assert not runner.wait_idle(timeout=0.3) and ran == []
    runner.start()
    assert runner.wait_idle(timeout=5)
    assert ran == [3, 1, 2]
    assert runner.close(timeout=5)
    assert JobRunner(torch_threads=None, start=False).close(timeout=5)


@pytest.mark.parametrize("key", BEHIND_TABS)
def test_every_panel_behind_a_tab_builds_on_a_session_with_a_model(window, qtbot, key):
    window.docks[key].raise_()
    qtbot.waitUntil(lambda: window.panel_docks.built(key) is not None, timeout=5000)
    assert window.docks[key].widget() is window.panel_docks.built(key)
    qtbot.wait(50)
