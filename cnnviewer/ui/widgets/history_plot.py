"""A live plot of a run's objective, step by step, that repaints once per update.

Why not pyqtgraph's auto-range: it recomputes the range while painting, and a
changed range repaints the plot a second time with both axes' ticks laid out
anew (pyqtgraph's AxisItem: ~4 ms in Python each). With the range set here,
before the paint, and only when the curve leaves it (with headroom), most
updates repaint the curve alone over the axes' cached pictures: a long run's
plot no longer costs the window several repaints per preview.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

HEADROOM = 0.25     # of the data's span, added on the side it grew past


class HistoryPlot(pg.PlotWidget):
    """Objective (or loss) per step; `show_history` replaces the curve."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background=(30, 30, 34))
        self.setLabel("left", "objective")
        self.setLabel("bottom", "step")
        self.curve = self.plot([], [], pen=pg.mkPen((255, 160, 60), width=2))
        self.getViewBox().disableAutoRange()
        self.y_range: tuple[float, float] | None = None
        self.x_end: int | None = None
        self.range_changes = 0      # how often the axes were laid out anew (tests, benchmarks)

    def set_label(self, text: str) -> None:
        """A new label lays the plot out again: only when it changes."""
        if self.getAxis("left").labelText != text:
            self.setLabel("left", text)

    def clear_history(self) -> None:
        self.curve.setData([], [])
        self.y_range, self.x_end = None, None

    def show_history(self, values: list[float], total_steps: int) -> None:
        """The curve of `values` (one per step) on a step axis from 0 to `total_steps`."""
        ys = np.asarray(values, dtype=float)
        self.curve.setData(np.arange(1, len(ys) + 1), ys)
        view = self.getViewBox()
        end = max(int(total_steps), len(ys), 1)
        if end != self.x_end:
            self.x_end = end
            view.setXRange(0, end, padding=0.02)
            self.range_changes += 1
        finite = ys[np.isfinite(ys)]
        if not finite.size:
            return
        low, high = float(finite.min()), float(finite.max())
        if self.y_range is not None and self.y_range[0] <= low and high <= self.y_range[1]:
            return
        span = max(high - low, abs(high) * 0.05, 1e-6)
        bottom, top = self.y_range or (math.inf, -math.inf)
        bottom = low - HEADROOM * span if low < bottom else bottom
        top = high + HEADROOM * span if high > top else top
        self.y_range = (bottom, top)
        view.setYRange(bottom, top, padding=0)
        self.range_changes += 1
