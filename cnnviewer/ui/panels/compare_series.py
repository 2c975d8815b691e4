"""Compare's view of a training run: weight and activation drift against the checkpoint.

x is the checkpoint's place in training (its epoch, else its step, else its index), labelled with
what it is; a ring marks the checkpoint every panel shows, and a click moves the strip there.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

WEIGHTS, ACTIVATIONS = (255, 160, 60), (86, 156, 214)


def positions(checkpoints: tuple) -> tuple[np.ndarray, str]:
    """x per checkpoint and the axis title: epochs when every one has an epoch (and they differ),
    else steps, else the index in training order."""
    for field in ("epoch", "step"):
        values = [getattr(c, field) for c in checkpoints]
        if values and all(v is not None for v in values) and len(set(values)) == len(values):
            return np.array(values, dtype=float), field
    return np.arange(len(checkpoints), dtype=float), "checkpoint (training order)"


class SeriesDriftPlot(QWidget):
    """‖W_k − W_0‖/‖W_0‖ and the selected layer's activation change against the checkpoint."""

    point_clicked = Signal(int)   # the index of the checkpoint nearest to the click

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.plot = pg.PlotWidget(background=(30, 30, 34))
        self.plot.setLabel("left", "relative change vs the first")
        for side in ("left", "bottom"):
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        self.plot.getPlotItem().layout.setContentsMargins(4, 4, 12, 4)
        self.plot.setTitle(f"<span style='color: rgb{WEIGHTS}'>●</span> weights &nbsp;&nbsp; "
                           f"<span style='color: rgb{ACTIVATIONS}'>━</span> activations (selected layer, this image)",
                           size="9pt")
        self.weight_curve = self.plot.plot([], [], pen=pg.mkPen(WEIGHTS, width=1), symbol="o", symbolSize=7,
                                           symbolBrush=WEIGHTS)
        self.activation_curve = self.plot.plot([], [], pen=pg.mkPen(ACTIVATIONS, width=2), symbol="t",
                                               symbolSize=7, symbolBrush=ACTIVATIONS)
        self.marker = self.plot.plot([], [], pen=None, symbol="o", symbolSize=14, symbolBrush=None,
                                     symbolPen=pg.mkPen((255, 80, 80), width=2))
        self.plot.scene().sigMouseClicked.connect(self._on_clicked)
        self.plot.setToolTip("Click a point to show that checkpoint in every panel")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.plot, 1)
        self.x = np.zeros(0)
        self.drift: tuple = ()
        self.index: int | None = None

    def show_listing(self, checkpoints: tuple, folder_name: str) -> None:
        """A new listing: x positions and labels; the curves wait for the drift."""
        self.x, title = positions(checkpoints)
        self.plot.setLabel("bottom", title)
        ticks = [(float(x), c.label if title.startswith("checkpoint") and len(checkpoints) <= 8 else f"{x:g}")
                 for x, c in zip(self.x, checkpoints)]
        self.plot.getAxis("bottom").setTicks([ticks] if len(ticks) <= 16 else None)
        self.caption.setText(f"<b>{folder_name}</b>: {len(checkpoints)} checkpoints — measuring drift…")
        self.drift = ()
        self.weight_curve.setData([], [])
        self.activation_curve.setData([], [])
        self.set_current(self.index)

    def show_drift(self, drift: tuple) -> None:
        """Each checkpoint's drift (engine CheckpointDrift, in listing order)."""
        if len(drift) != len(self.x):
            return
        self.drift = drift
        weights = np.array([_number(d.weights) for d in drift])
        acts = np.array([_number(d.activation) for d in drift])
        self.weight_curve.setData(self.x, weights, connect="finite")
        self.activation_curve.setData(self.x, acts, connect="finite")
        layer = next((d.layer for d in drift if d.layer), None)
        bad = [d.checkpoint.label for d in drift if d.error]
        self.caption.setText(f"Drift against the first checkpoint; activations at <b>{layer or '—'}</b>"
                             + (f"; unreadable: {', '.join(bad[:3])}" if bad else ""))
        self.set_current(self.index)

    def set_current(self, index: int | None) -> None:
        """Ring the checkpoint every panel shows."""
        self.index = index
        if index is None or not 0 <= index < len(self.x):
            self.marker.setData([], [])
            return
        value = _number(self.drift[index].weights) if index < len(self.drift) else 0.0
        self.marker.setData([self.x[index]], [0.0 if math.isnan(value) else value])

    def _on_clicked(self, event) -> None:
        if not len(self.x):
            return
        point = self.plot.getViewBox().mapSceneToView(event.scenePos())
        self.point_clicked.emit(self.nearest(point.x()))

    def nearest(self, x: float) -> int:
        """The index of the checkpoint whose x is nearest."""
        return int(np.argmin(np.abs(self.x - x)))


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)
