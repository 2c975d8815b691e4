"""bench_stalls' attribution scenarios (issue 23: faithfulness curves, the sanity check) and experiments (24).

Kept beside bench_stalls so that script stays readable; each takes its `wait_until` and `settle`.
"""

from __future__ import annotations

from collections.abc import Callable


def scenario_faithfulness(window, wait_until: Callable, settle: Callable) -> None:
    """Deletion, insertion and ROAD curves of three methods in the Faithfulness panel."""
    panel = window.faithfulness
    window.docks["faithfulness"].raise_()
    panel.tabs.setCurrentWidget(panel.curves)
    before = panel.curves.results
    panel.curves.methods.set_chosen(("saliency", "grad-cam", "grad-cam++"))
    panel.curves.road.setChecked(not panel.curves.road.isChecked())   # a change: always recomputed
    wait_until(lambda: panel.curves.results is not before and len(panel.curves.results) == 3)
    settle(window)


def scenario_sanity(window, wait_until: Callable, settle: Callable) -> None:
    """The cascading randomization check of saliency and Grad-CAM over MobileNetV2's blocks."""
    panel = window.faithfulness
    window.docks["faithfulness"].raise_()
    panel.tabs.setCurrentWidget(panel.sanity)
    panel.sanity.methods.set_chosen(("saliency", "grad-cam"))
    panel.run_sanity()
    wait_until(lambda: panel.sanity.result is not None)
    settle(window)


def scenario_experiments(window, wait_until: Callable, settle: Callable) -> None:
    """Issue 24: a knock-out switches every panel and is cleared; then the Experiments panel ranks
    features.17's 320 channels, deletes each residual block on the current image, and probes 8 shifts."""
    from cnnviewer.engine.experiments.ablate_spec import Knockout

    session, controller = window.session, window.controller
    intact = session.model
    controller.add_knockout(Knockout("features.14", (1, 2, 3)))
    wait_until(lambda: session.model is not intact and session.forward is not None)
    settle(window)
    controller.clear_interventions()
    wait_until(lambda: session.model is intact and session.forward is not None)
    settle(window)
    window.docks["experiments"].raise_()
    panel = window.experiments
    session.select(layer="features.17.conv.2")
    channels = panel.channels
    channels.run_button.click()
    wait_until(lambda: channels.result is not None)
    for index, tab in ((1, panel.lesion), (2, panel.probe)):
        panel.tabs.setCurrentIndex(index)
        tab.set_folder(None)
        tab.run_button.click()
        wait_until(lambda tab=tab: tab.result is not None and not tab._running)
    settle(window)
