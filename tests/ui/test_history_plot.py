"""The synthesis panel's objective plot: the curve always in view, the axes laid out anew rarely,
and one repaint per update (pyqtgraph's auto-range painted twice and re-ticked both axes each time)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QObject

from cnnviewer.ui.widgets.history_plot import HistoryPlot


class PaintCounter(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.paints = 0

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.paints += 1
        return False


def test_curve_stays_in_view_with_few_range_changes_and_one_paint_per_update(qtbot):
    plot = HistoryPlot()
    qtbot.addWidget(plot)
    plot.resize(360, 240)
    plot.show()
    qtbot.waitExposed(plot)
    counter = PaintCounter()
    plot.viewport().installEventFilter(counter)
    rising = list(np.log1p(np.arange(200.0)) * 10 + np.random.default_rng(0).normal(0, 0.3, 200))
    paints = []
    for step in range(1, 201):
        plot.show_history(rising[:step], 200)
        before = counter.paints
        qtbot.wait(15)          # the scene's deferred updates and the repaints they ask for
        paints.append(counter.paints - before)
        (x0, x1), (y0, y1) = plot.getViewBox().viewRange()
        assert x0 <= 1 and x1 >= 200
        assert y0 <= min(rising[:step]) and y1 >= max(rising[:step])
    assert plot.range_changes <= 20, plot.range_changes
    assert all(p >= 1 for p in paints), paints          # every update is drawn
    assert sum(p > 1 for p in paints) <= plot.range_changes, paints    # twice only when the axes change
    plot.viewport().removeEventFilter(counter)


def test_restart_and_values_that_are_not_finite(qtbot):
    plot = HistoryPlot()
    qtbot.addWidget(plot)
    plot.show_history([1e6, 5e5, float("nan"), 2e5, float("inf")], 40)      # a loss going down, a bad step
    (_x0, x1), (y0, y1) = plot.getViewBox().viewRange()
    assert x1 >= 40 and y0 <= 2e5 and y1 >= 1e6
    plot.clear_history()
    assert plot.curve.xData is None or len(plot.curve.xData) == 0
    plot.show_history([0.5, 0.6], 10)           # a new run: the range follows the new values, not the old
    (_x0, x1), (y0, y1) = plot.getViewBox().viewRange()
    assert 10 <= x1 < 40 and y1 < 10
    plot.show_history([], 10)                   # nothing yet: no error
