"""bench_stalls' attribution scenarios (issue 23): faithfulness curves and the sanity check.

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
