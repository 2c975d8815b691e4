"""Deletion, insertion and ROAD curves of every chosen method on one plot, and the perturbed image
at the step under the mouse: how much the prediction depends on the pixels each map ranks first."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.attribution.scores import BETTER, SUBSTRATES
from cnnviewer.engine.attribution.target import METHODS
from cnnviewer.ui.panels.faithfulness.table import ScoreTable
from cnnviewer.ui.widgets.controls import ScrollingRow, labelled_row
from cnnviewer.ui.widgets.image_canvas import ImageCanvas

CHEAP = ("saliency", "guided-backprop", "input-x-gradient", "grad-cam", "grad-cam++", "layer-cam", "eigen-cam")
CURVE_NAMES = {"deletion": "Deletion", "insertion": "Insertion", "road-morf": "ROAD, most relevant removed first",
               "road-lerf": "ROAD, least relevant removed first"}
SHORT_NAMES = {"deletion": "Deletion", "insertion": "Insertion", "road-morf": "ROAD MoRF", "road-lerf": "ROAD LeRF"}
PALETTE = [(86, 156, 214), (255, 160, 60), (106, 200, 120), (230, 90, 90), (180, 130, 230), (150, 110, 90),
           (230, 130, 200), (160, 160, 160), (200, 200, 80), (80, 200, 210), (255, 220, 140), (120, 120, 255)]


class MethodChecks(QWidget):
    """A row of ticks, one per method; `changed` when any is toggled."""

    changed = Signal()

    def __init__(self, methods: tuple[str, ...], ticked: tuple[str, ...], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.boxes: dict[str, QCheckBox] = {}
        for method in methods:
            box = QCheckBox(method)
            box.setChecked(method in ticked)
            box.toggled.connect(self.changed)
            row.addWidget(box)
            self.boxes[method] = box
        row.addStretch(1)

    def chosen(self) -> list[str]:
        return [method for method, box in self.boxes.items() if box.isChecked()]

    def set_chosen(self, methods) -> None:
        for method, box in self.boxes.items():
            box.setChecked(method in methods)


class CurvesView(QWidget):
    """Controls, the plot, the perturbed image under the mouse, and the score table."""

    settings_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.results: dict[str, object] = {}       # method -> Faithfulness
        self.methods = MethodChecks(METHODS, CHEAP)
        self.substrate = QComboBox()
        self.substrate.addItems(SUBSTRATES)
        self.substrate.setToolTip("What removed pixels become: paper = black for deletion and a blurred copy for "
                                  "insertion (Petsiuk et al. 2018), or one of them (or the mean colour) for both")
        self.steps = QSpinBox()
        self.steps.setRange(5, 224)
        self.steps.setValue(50)
        self.steps.setToolTip("How many equal steps remove (or insert) all the pixels; one batched forward pass "
                              "per group of steps")
        self.road = QCheckBox("ROAD")
        self.road.setToolTip("Remove and debias (Rong et al. 2022): removed pixels are filled by noisy linear "
                             "imputation from their neighbours, so the model cannot read the removal's shape; "
                             "removes 10-90 % of the pixels most- and least-relevant first (slower)")
        self.curve = QComboBox()
        for name, text in CURVE_NAMES.items():
            self.curve.addItem(text, name)
        self.picked = QComboBox()
        self.picked.setToolTip("Whose perturbed image is shown (or click its curve)")
        self.picked.setMinimumContentsLength(16)
        self.plot = pg.PlotWidget(background=(30, 30, 34))
        self.plot.setLabel("left", "p(target)")
        self.plot.setLabel("bottom", "fraction of pixels removed")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.getAxis("left").enableAutoSIPrefix(False)     # probabilities, not thousandths
        self.plot.setMinimumWidth(180)
        self.legend = self.plot.addLegend(offset=(-10, 10), brush=pg.mkBrush(30, 30, 34, 190))   # curves show through
        self.cursor = pg.InfiniteLine(angle=90, pen=pg.mkPen((220, 220, 220), width=1, style=Qt.PenStyle.DashLine))
        self.plot.addItem(self.cursor, ignoreBounds=True)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.frame = ImageCanvas(self)
        self.frame.setMinimumWidth(100)
        self.frame_label = QLabel("")
        self.frame_label.setWordWrap(True)
        self.table = ScoreTable()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(ScrollingRow(labelled_row([("Image of", self.picked)])))
        right_layout.addWidget(self.frame, 1)
        right_layout.addWidget(self.frame_label)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.plot)
        split.addWidget(right)
        split.setSizes([600, 300])
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(split)
        vertical.addWidget(self.table)
        vertical.setSizes([500, 180])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(ScrollingRow(_row(QLabel("Methods"), self.methods)))
        layout.addWidget(ScrollingRow(labelled_row([("Substrate", self.substrate), ("Steps", self.steps),
                                                    ("", self.road), ("Curve", self.curve)])))
        layout.addWidget(vertical, 1)
        self._step = 0
        self._redraw = QTimer(self, singleShot=True, interval=0)
        self._redraw.timeout.connect(self._draw_frame)
        self.methods.changed.connect(self.settings_changed)
        self.substrate.currentIndexChanged.connect(self.settings_changed)
        self.steps.valueChanged.connect(self.settings_changed)
        self.road.toggled.connect(self._on_road_toggled)
        self.curve.currentIndexChanged.connect(self.draw)
        self.picked.currentIndexChanged.connect(self._draw_frame)

    def settings(self) -> dict:
        metrics = ("deletion", "insertion", "road") if self.road.isChecked() else ("deletion", "insertion")
        return {"methods": self.methods.chosen(), "metrics": metrics, "steps": self.steps.value(),
                "substrate": self.substrate.currentText()}

    def _on_road_toggled(self, on: bool) -> None:
        self.settings_changed.emit()
        if not on and self.curve.currentData().startswith("road"):
            self.curve.setCurrentIndex(0)

    def clear(self) -> None:
        self.results = {}
        self.plot.clear()
        self.plot.addItem(self.cursor, ignoreBounds=True)
        self.legend.clear()
        self.frame.clear()
        self.frame_label.setText("")
        self.table.show_scores({})

    def show_results(self, results: dict) -> None:
        """Faithfulness per method (engine.attribution.scores.Faithfulness)."""
        self.results = results
        current = self.picked.currentText()
        self.picked.blockSignals(True)
        self.picked.clear()
        self.picked.addItems(list(results))
        self.picked.setCurrentIndex(max(0, self.picked.findText(current)))
        self.picked.blockSignals(False)
        self.table.show_scores(results)
        QTimer.singleShot(0, self.draw)   # the table, then the curves: two short GUI turns, not one long one

    def draw(self) -> None:
        """One line per method for the chosen curve, its AUC in the legend."""
        name = self.curve.currentData()
        self.plot.clear()
        self.legend.clear()
        self.plot.addItem(self.cursor, ignoreBounds=True)
        self.plot.setLabel("bottom", "fraction of pixels inserted" if name == "insertion"
                           else "fraction of pixels removed")
        number = "AUC" if name in ("deletion", "insertion") else "score change"
        self.plot.setTitle(f"{SHORT_NAMES[name]} {number} in the legend, {BETTER[name]} is better", size="9pt")
        for index, (method, result) in enumerate(self.results.items()):
            curve = result.curves.get(name)
            if curve is None:
                continue
            pen = pg.mkPen(PALETTE[index % len(PALETTE)], width=2)
            score = result.scores.get(name)
            label = f"{method}  {score:.3f}" if score is not None else method
            item = self.plot.plot(curve.fractions, curve.values, pen=pen, name=label)
            item.curve.setClickable(True, width=8)
            item.sigClicked.connect(lambda _item, method=method: self.picked.setCurrentText(method))
        self.plot.enableAutoRange()
        self._redraw.start()

    def _on_mouse_moved(self, position) -> None:
        if not self.results or not self.plot.sceneBoundingRect().contains(position):
            return
        x = self.plot.getPlotItem().vb.mapSceneToView(position).x()
        self.cursor.setValue(x)
        result = self.results.get(self.picked.currentText())
        curve = result.curves.get(self.curve.currentData()) if result is not None else None
        if curve is None:
            return
        step = int(np.argmin(np.abs(np.asarray(curve.fractions) - x)))
        if step != self._step:
            self._step = step
            self._redraw.start()    # many mouse moves, one picture

    def _draw_frame(self) -> None:
        result = self.results.get(self.picked.currentText())
        name = self.curve.currentData()
        curve = result.curves.get(name) if result is not None else None
        if curve is None:
            self.frame.clear()
            self.frame_label.setText("")
            return
        step = min(self._step, len(curve.fractions) - 1)
        self.frame.show_image(result.frame(name, step), keep_view=True)
        verb = "inserted" if name == "insertion" else "removed"
        self.frame_label.setText(f"{result.method}: {curve.fractions[step]:.0%} of the pixels {verb}, "
                                 f"p(target) = {curve.values[step]:.3f}")


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row
