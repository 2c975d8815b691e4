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
        # Two plots sharing x: weights move by a few percent while activations move by tens of
        # percent, and on one axis the weights' curve lay flat along zero.
        self.weights_plot, self.weight_curve, weight_marker = self._plot("‖W−W₀‖/‖W₀‖", WEIGHTS, "o")
        self.activations_plot, self.activation_curve, activation_marker = self._plot("activation change",
                                                                                     ACTIVATIONS, "t")
        self.activations_plot.setXLink(self.weights_plot)
        self.weights_plot.getAxis("bottom").setStyle(showValues=False)
        self.markers = (weight_marker, activation_marker)
        self.marker = weight_marker
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.caption)
        layout.addWidget(self.weights_plot, 1)
        layout.addWidget(self.activations_plot, 1)
        self.x = np.zeros(0)
        self.drift: tuple = ()
        self.index: int | None = None

    def _plot(self, label: str, colour: tuple[int, int, int], symbol: str):
        plot = pg.PlotWidget(background=(30, 30, 34))
        plot.setLabel("left", label)
        for side in ("left", "bottom"):
            plot.getAxis(side).enableAutoSIPrefix(False)
        plot.getAxis("left").setWidth(64)          # both plots' x axes line up
        plot.getPlotItem().layout.setContentsMargins(4, 2, 12, 2)
        curve = plot.plot([], [], pen=pg.mkPen(colour, width=2), symbol=symbol, symbolSize=7, symbolBrush=colour)
        marker = plot.plot([], [], pen=None, symbol="o", symbolSize=14, symbolBrush=None,
                           symbolPen=pg.mkPen((255, 80, 80), width=2))
        plot.scene().sigMouseClicked.connect(lambda event, p=plot: self._on_clicked(p, event))
        plot.setToolTip("Click a point to show that checkpoint in every panel")
        return plot, curve, marker

    def show_listing(self, checkpoints: tuple, folder_name: str) -> None:
        """A new listing: x positions and labels; the curves wait for the drift."""
        self.x, title = positions(checkpoints)
        self.activations_plot.setLabel("bottom", title)
        ticks = [(float(x), f"{x:g}") for x in self.x]
        for plot in (self.weights_plot, self.activations_plot):
            plot.getAxis("bottom").setTicks([ticks] if len(ticks) <= 16 else None)
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
        self.activations_plot.setLabel("left", f"change at {layer}" if layer else "activation change")
        self.caption.setText(f"Drift against the first checkpoint: weights (all layers), and <b>{layer or '—'}</b>'s "
                             "activation on this image, ‖a−a₀‖/‖a₀‖"
                             + (f"; unreadable: {', '.join(bad[:3])}" if bad else ""))
        self.set_current(self.index)

    def set_current(self, index: int | None) -> None:
        """Ring the checkpoint every panel shows."""
        self.index = index
        for marker, field in zip(self.markers, ("weights", "activation")):
            if index is None or not 0 <= index < len(self.x):
                marker.setData([], [])
                continue
            value = _number(getattr(self.drift[index], field)) if index < len(self.drift) else 0.0
            marker.setData([self.x[index]], [0.0 if math.isnan(value) else value])

    def _on_clicked(self, plot, event) -> None:
        if not len(self.x):
            return
        point = plot.getViewBox().mapSceneToView(event.scenePos())
        self.point_clicked.emit(self.nearest(point.x()))

    def nearest(self, x: float) -> int:
        """The index of the checkpoint whose x is nearest."""
        return int(np.argmin(np.abs(self.x - x)))


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)
