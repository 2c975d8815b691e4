"""The randomization sanity check (Adebayo et al. 2018): every method's map as a copy of the model is
randomized from the logits down, beside its similarity to the original map.

A map that still looks the same once the weights are random cannot be explaining what the model
learned; the view flags such methods.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QLabel, QPushButton, QSplitter, QVBoxLayout, QWidget

from cnnviewer.engine.attribution.target import METHODS
from cnnviewer.engine.views.heatmaps import render, side_by_side
from cnnviewer.ui.panels.faithfulness.curves import PALETTE, MethodChecks, _row
from cnnviewer.ui.widgets.controls import ScrollingRow, labelled_row
from cnnviewer.ui.widgets.image_canvas import ImageCanvas

DEFAULT_METHODS = ("saliency", "guided-backprop", "grad-cam", "integrated-gradients")
MAX_COLUMNS = 8     # stages drawn as tiles; the plot shows every stage
TILE = 128          # px per map in the grid: the whole check fits a dock, titles stay readable
MODES = {"cascading": "cascading", "independent": "independent"}


class SanityView(QWidget):
    """Controls, the stage-by-method grid of maps, the similarity plot and a verdict per method."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result = None
        self.methods = MethodChecks(tuple(m for m in METHODS if m != "occlusion"), DEFAULT_METHODS)
        self.mode = QComboBox()
        for name, text in MODES.items():
            self.mode.addItem(text, name)
        self.mode.setToolTip("cascading: randomize from the logits down, the randomized layers accumulate (the "
                             "paper's main test); independent: one block randomized at a time, the rest trained")
        self.granularity = QComboBox()
        self.granularity.addItem("blocks", "block")
        self.granularity.addItem("layers", "layer")
        self.granularity.setToolTip("What one stage randomizes: a block (e.g. one inverted-residual block) or "
                                    "every layer with weights, one at a time (many more stages)")
        self.run_button = QPushButton("Run sanity check")
        self.run_button.setToolTip("Randomizes a copy of the model (the model itself is never changed) and "
                                   "recomputes every chosen map at each stage")
        self.metric = QComboBox()
        self.metric.addItem("Spearman rank correlation of |map|", "spearman")
        self.metric.addItem("SSIM", "ssim")
        self.metric.currentIndexChanged.connect(self._draw_plot)
        self.canvas = ImageCanvas(self)
        self.plot = pg.PlotWidget(background=(30, 30, 34))
        self.plot.setLabel("left", "similarity")
        self.plot.setLabel("bottom", "stage (randomized down to)")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setMinimumWidth(180)
        self.plot.setYRange(-0.2, 1.0)
        self.legend = self.plot.addLegend(offset=(-10, 10), brush=pg.mkBrush(30, 30, 34, 190))
        self.verdicts = QLabel("Run the check to see whether each method's map depends on the learned weights.")
        self.verdicts.setWordWrap(True)
        self.verdicts.setTextFormat(Qt.TextFormat.RichText)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.canvas)
        split.addWidget(self.plot)
        split.setSizes([450, 250])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(ScrollingRow(_row(QLabel("Methods"), self.methods)))
        layout.addWidget(ScrollingRow(labelled_row([("Mode", self.mode), ("Stages", self.granularity),
                                                    ("", self.run_button), ("Plot", self.metric)])))
        layout.addWidget(split, 1)
        layout.addWidget(self.verdicts)

    def settings(self) -> dict:
        return {"methods": self.methods.chosen(), "mode": self.mode.currentData(),
                "granularity": self.granularity.currentData()}

    def clear(self, text: str = "") -> None:
        self.result = None
        self.canvas.clear()
        self.plot.clear()
        self.legend.clear()
        self.verdicts.setText(text)

    def show_result(self, result, grid: np.ndarray | None = None) -> None:
        """A SanityResult (maps per method and stage, similarities, verdicts) and its `sanity_grid`."""
        self.result = result
        self.canvas.show_image(grid if grid is not None else sanity_grid(result))
        lines = []
        for method in result.methods:
            sentence = result.verdict(method)
            colour = "#e05050" if result.failing[method] else "#50b060"
            lines.append(f"<span style='color:{colour}'>{'✗' if result.failing[method] else '✓'}</span> {sentence}")
        self.verdicts.setText("<br>".join(lines))
        self._draw_plot()

    def _draw_plot(self) -> None:
        self.plot.clear()
        self.legend.clear()
        result = self.result
        if result is None:
            return
        values = result.spearman if self.metric.currentData() == "spearman" else result.ssim
        for index, method in enumerate(result.methods):
            pen = pg.mkPen(PALETTE[index % len(PALETTE)], width=2)
            self.plot.plot(np.arange(len(result.stages)), values[method], pen=pen, symbol="o", symbolSize=5,
                           symbolBrush=PALETTE[index % len(PALETTE)], name=method)
        lowest = min(min(v) for v in values.values())
        self.plot.setYRange(min(-0.2, lowest - 0.05), 1.05)     # rank correlations can turn negative
        every = max(1, -(-len(result.stages) // 5))     # about five names fit under the plot
        ticks = [(i, name) for i, name in enumerate(result.stages) if i % every == 0]
        self.plot.getAxis("bottom").setTicks([ticks])


def sanity_grid(result) -> np.ndarray:
    """Every method's map (rows) at up to MAX_COLUMNS stages (columns), titled: numpy and Pillow only,
    so the job thread draws it (on the GUI thread it took 60-90 ms)."""
    stages = list(range(len(result.stages)))
    if len(stages) > MAX_COLUMNS:   # the original, the last, and evenly spaced ones between
        picks = np.linspace(0, len(stages) - 1, MAX_COLUMNS).round().astype(int)
        stages = sorted(set(picks.tolist()))
    pictures, titles = [], []
    for method in result.methods:
        for stage in stages:
            pictures.append(_small(render(result.maps[method][stage][None], "heat", result.display)))
            where = "original" if stage == 0 else result.stages[stage]
            titles.append(method[:18] if stage == 0 else
                          f"{where[-11:]} ρ{result.spearman[method][stage]:.2f}")
    return side_by_side(pictures, titles, "heat", columns=len(stages))


def _small(picture: np.ndarray) -> np.ndarray:
    """A map tile at TILE px: the check has up to 8 columns and 12 rows."""
    from PIL import Image

    return np.asarray(Image.fromarray(picture).resize((TILE, TILE), Image.Resampling.BILINEAR))
