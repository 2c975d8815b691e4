"""Compare: the session's model (A) and a second model or weights file (B) on the same input.

Both top-5s side by side with their disagreements, the selected layer's feature maps in each
(where B has that layer), and, for one architecture with two weight files, how far every layer
moved, against depth; click a point to select that layer everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.session import Session
from cnnviewer.engine.types import WEIGHT_SUFFIXES
from cnnviewer.ui import file_dialogs
from cnnviewer.ui.load_results import LazyWorkbench
from cnnviewer.ui.dialogs import pick_model
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.compare_series import SeriesDriftPlot
from cnnviewer.ui.widgets.controls import on_screen
from cnnviewer.ui.widgets.image_canvas import ImageCanvas

DIFFERENT = QColor(229, 165, 10, 90)   # a class only one of the two top-5s holds
SKIPPED_TYPES = {"Dropout", "DropPath", "Identity", "Flatten"}   # never B's first guess: they repeat a neighbour


class ComparePanel(QWidget):
    """A (the session's model) against B (chosen here), on the session's image and layer."""

    def __init__(self, session: Session, jobs: UiJobs, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self._bench_b = LazyWorkbench()       # B's own activation cache: A's stays the other panels'
        self.other = None                     # B: a LoadedModel
        self.result = None                    # the last Comparison
        self.choose_button = QPushButton("Model B…")
        self.choose_button.setToolTip("The second model (any torchvision or timm:NAME model)")
        self.weights_button = QPushButton("Weights for B…")
        self.weights_button.setToolTip("A weights file for B: for A's own architecture (e.g. your fine-tuned "
                                       "checkpoint) it also shows how far each layer moved")
        self.setToolTip("Drop a weights file here to make it model B, or a folder of a training run's "
                        "checkpoints to plot their drift")
        self.choose_button.clicked.connect(self._on_choose)
        self.weights_button.clicked.connect(self._on_weights)
        self.names = QLabel("Choose a second model, or weights for this one, to compare on the same image.")
        self.names.setWordWrap(True)
        self.table = QTableWidget(5, 4)
        self.table.setHorizontalHeaderLabels(["A", "", "B", ""])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height()
                                  + 5 * self.table.verticalHeader().defaultSectionSize() + 4)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setTextFormat(Qt.TextFormat.RichText)
        self.maps = (ImageCanvas(self), ImageCanvas(self))
        self.map_titles = (QLabel(""), QLabel(""))
        self.b_layer = QComboBox()             # B's own layer, when B is another architecture
        self.b_layer.setToolTip("B is another architecture: the layer of B to show beside A's selected layer")
        self.b_layer.setPlaceholderText("B's layer: the one at the same depth as A's; pick another")
        self.b_layer.setVisible(False)
        self.b_layer.activated.connect(lambda _i: self.refresh_maps())
        self.drift_plot = pg.PlotWidget(background=(30, 30, 34))
        self.drift_plot.setLabel("left", "‖B−A‖ / ‖A‖")
        self.drift_plot.setLabel("bottom", "layer (depth order)")
        for side in ("left", "bottom"):        # no "(x0.001)" prefix: it made the left label too long to show
            self.drift_plot.getAxis(side).enableAutoSIPrefix(False)
        self.drift_plot.getPlotItem().layout.setContentsMargins(4, 4, 12, 4)   # the top tick's text fits
        # The legend is the title, above the plot: inside it, it sat over the points.
        self.drift_plot.setTitle("<span style='color: #ffa03c'>●</span> weights &nbsp;&nbsp; "
                                 "<span style='color: #569cd6'>━</span> activations on this image", size="9pt")
        self.weight_curve = self.drift_plot.plot([], [], pen=None, symbol="o", symbolSize=6,
                                                 symbolBrush=(255, 160, 60))
        self.activation_curve = self.drift_plot.plot([], [], pen=pg.mkPen((86, 156, 214), width=2))
        self.marker = self.drift_plot.plot([], [], pen=None, symbol="o", symbolSize=11, symbolBrush=None,
                                           symbolPen=pg.mkPen((255, 80, 80), width=2))
        self.drift_plot.scene().sigMouseClicked.connect(self._on_plot_clicked)
        self.drift_plot.setToolTip("Click a point to select that layer in every panel")
        buttons = QHBoxLayout()
        for widget in (self.choose_button, self.weights_button):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        columns = QSplitter(Qt.Orientation.Horizontal)
        for title, canvas, picker in zip(self.map_titles, self.maps, (None, self.b_layer)):
            box = QWidget()
            column = QVBoxLayout(box)
            column.setContentsMargins(0, 0, 0, 0)
            title.setWordWrap(True)
            column.addWidget(title)
            if picker is not None:
                column.addWidget(picker)
            column.addWidget(canvas, 1)
            columns.addWidget(box)
        self._ab_columns = columns
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(columns)
        vertical.addWidget(self.drift_plot)
        self.series_plot = SeriesDriftPlot()   # a checkpoint folder's drift (shown while one is open)
        self.series_plot.setVisible(False)
        vertical.addWidget(self.series_plot)
        vertical.setSizes([400, 200, 260])
        self.series = None                     # the window's CheckpointBrowser (attach_series)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(buttons)
        layout.addWidget(self.names)
        layout.addWidget(self.table)
        layout.addWidget(self.verdict)
        layout.addWidget(vertical, 1)
        session.forward_changed.connect(lambda _summary: self.refresh())
        session.selection_changed.connect(lambda _selection: self.refresh_maps())

    # ---------------------------------------------------------------- a checkpoint folder
    def attach_series(self, browser) -> None:
        """Plot `browser`'s (ui.checkpoints.CheckpointBrowser) drift against the checkpoint while a
        folder is open; a click on the plot shows that checkpoint everywhere."""
        self.series = browser
        plot = self.series_plot
        browser.listed.connect(lambda checkpoints: (plot.show_listing(checkpoints, browser.folder.name),
                                                    self._arrange(), browser.request_drift(self)))
        browser.shown.connect(plot.set_current)
        browser.drift_ready.connect(plot.show_drift)
        browser.closed.connect(self._arrange)
        plot.point_clicked.connect(browser.show)
        self._session.image_changed.connect(lambda _image: browser.request_drift(self))
        self._session.selection_changed.connect(self._on_series_selection)
        if browser.is_open:
            plot.show_listing(browser.checkpoints, browser.folder.name)
            plot.set_current(browser.index)
            browser.request_drift(self)
        self._arrange()

    def _arrange(self) -> None:
        """While a checkpoint folder is open and no B is chosen, its drift takes the A/B views' place."""
        series = self.series is not None and self.series.is_open
        self.series_plot.setVisible(series)
        ab = self.other is not None or not series
        for widget in (self.table, self._ab_columns):
            widget.setVisible(ab)
        self.drift_plot.setVisible(ab and (self.result is None or bool(self.result.drift)))
        self.names.setText(self.names.text() if self.other is not None else
                           "A checkpoint folder is open: how far each checkpoint moved is plotted below (click a "
                           "point to show it). Choose a second model, or weights, to compare A with B."
                           if series else "Choose a second model, or weights for this one, to compare on the same image.")

    def _on_series_selection(self, selection) -> None:
        """Another layer: its activation drift (a channel or class change leaves it as it is)."""
        drift = self.series.drift if self.series is not None else ()
        if self.series is not None and self.series.is_open and (not drift or drift[0].layer != selection.layer):
            self.series.request_drift(self)

    # ---------------------------------------------------------------- choosing B
    def _on_choose(self) -> None:
        chosen = pick_model(self, self._controller, self.other.name if self.other else None)
        if chosen:
            self.load_other(chosen)

    def _on_weights(self) -> None:
        path = file_dialogs.open_file(self, "Weights for model B",
                                      "Weights (" + " ".join(f"*{s}" for s in sorted(WEIGHT_SUFFIXES)) + ")")
        if path:
            self.load_other_weights(path)

    def load_other(self, spec: str) -> None:
        """Make `spec` (a model name) model B."""
        def work(context):
            from cnnviewer.engine.models.loading import load_model
            return load_model(spec, allow_download=True, progress=context.report, cancel=context.cancel)

        self._load(work, f"Loading {spec} as B")

    def load_other_weights(self, path: str | Path) -> None:
        """Model B from a weights file, fitted to A's architecture when it fits (else the one it fits)."""
        path, base = str(path), self._session.model

        def work(_context):
            from cnnviewer.engine.models.loading import load_weights
            return load_weights(path, base)   # weights_only; a full pickle is refused here

        self._load(work, f"Loading {Path(path).name} as B")

    def _load(self, work, label: str) -> None:
        self.names.setText(f"{label}…")
        self._jobs.submit("compare_model", work, on_done=self._on_other_loaded, label=label, detach_on_cancel=True,
                          on_error=lambda text: self.names.setText(f"B not changed: {text}"))

    def _on_other_loaded(self, model) -> None:
        self.other = model
        self.maps[1].clear()                   # the old B's maps never stand beside the new B's name
        self.map_titles[1].setText("")
        self.b_layer.clear()
        self.b_layer.addItems([name for name in model.layer_names if name])
        self.b_layer.setCurrentIndex(-1)       # follow A's layer until one is picked here
        self._arrange()
        self.refresh()

    def _b_layer_for(self, layer: str) -> str:
        """B's layer beside A's `layer`: the one picked here, else the same name, else the layer at
        the same relative depth (a first guess the picker can change)."""
        b, picked = self.other, self.b_layer.currentText()
        if self.result is None or self.result.same_architecture or b is None:
            return layer
        if picked:
            return picked
        if layer in b.layer_names:
            return layer
        names_a = [n for n in self._session.model.layer_names if n]
        names_b = [n for n, kind in zip(b.layer_names, b.layer_types) if n and kind not in SKIPPED_TYPES]
        at = names_a.index(layer) / max(len(names_a) - 1, 1) if layer in names_a else 1.0
        return names_b[round(at * (len(names_b) - 1))] if names_b else layer

    # ---------------------------------------------------------------- engine
    def refresh(self) -> None:
        """Compare A and B on the session's image (when both exist and the panel is on screen)."""
        a, b, image = self._session.model, self.other, self._session.image
        if a is None or b is None or image is None or not on_screen(self):
            return
        bench_a, bench_b = self._controller.workbench, self._bench_b

        def work(_context):
            from cnnviewer.engine.comparison.compare import compare
            return compare(a, b, image, caches=(bench_a().cache, bench_b().cache))

        self._jobs.submit("compare", work, on_done=self.show_result, on_error=self.verdict.setText,
                          label="Comparing A and B")

    def refresh_maps(self) -> None:
        """The selected layer's mosaic in A and in B."""
        a, b, image, layer = self._session.model, self.other, self._session.image, self._session.selection.layer
        if a is None or b is None or image is None or not layer or not on_screen(self):
            return
        bench_a, bench_b = self._controller.workbench, self._bench_b
        aspect = self.maps[0].aspect()
        layer_b = self._b_layer_for(layer)

        def work(_context):
            from cnnviewer.engine.errors import ViewError
            from cnnviewer.engine.views.features import FeatureMapOptions
            options = FeatureMapOptions(aspect=aspect)
            views = []
            for bench, model, name in ((bench_a, a, layer), (bench_b, b, layer_b)):
                try:
                    views.append((name, bench().feature_maps(model, image, name, options)))
                except (ViewError, KeyError):
                    views.append((name, None))
            return layer, b, views

        self._jobs.submit("compare_maps", work, on_done=self._show_maps, on_error=self.verdict.setText)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override: compute only when looked at
        super().showEvent(event)
        self.refresh()
        if self.series is not None and self.series.is_open and not self.series.drift:
            self.series.request_drift(self)

    # ---------------------------------------------------------------- drawing
    def show_result(self, result) -> None:
        self.result = result
        a, b = result.names
        self.names.setText(f"<b>A</b>: {a} (the model every panel shows) &nbsp;&nbsp; <b>B</b>: {b}"
                           + (" — the same architecture" if result.same_architecture else ""))
        only_a, only_b = result.disagreements()
        self.b_layer.setVisible(not result.same_architecture)
        self.table.clearContents()
        for side, (predictions, only, broken) in enumerate(zip(result.predictions, (only_a, only_b), result.broken)):
            for row in range(5):
                if row < len(predictions):
                    cells = ((predictions[row].label, predictions[row].label in only),
                             (f"{predictions[row].probability:.1%}", False))
                else:
                    cells = ((broken if broken and row == 0 else "—", False), ("", False))
                for column, (text, different) in enumerate(cells):
                    item = QTableWidgetItem(text)
                    if different:
                        item.setBackground(QBrush(DIFFERENT))
                        item.setToolTip("Not in the other model's top-5")
                    self.table.setItem(row, 2 * side + column, item)
        self.table.resizeColumnsToContents()
        self.table.setFixedWidth(self.table.horizontalHeader().length() + 4)   # no empty area beside it
        warnings = result.warnings()
        if warnings:
            verdict = "<b style='color: #e5a50a'>" + "; ".join(w[0].upper() + w[1:] for w in warnings) + \
                ".</b> Top-1 not compared."
        else:
            verdict = "Top-1 agrees." if result.top1_agrees else "<b>Top-1 disagrees.</b>"
        if (only_a or only_b) and not warnings:
            verdict += f" Only in A's top-5: {', '.join(only_a) or '—'}; only in B's: {', '.join(only_b) or '—'}."
        shared = len(result.shared_layers)
        verdict += f" {shared} {'layer has' if shared == 1 else 'layers have'} the same name and shape in both"
        verdict += ": the drift plot shows how far each moved." if result.drift else \
            " (a different architecture: no per-layer drift; pick B's layer above its maps)."
        moved = [d for d in result.most_changed(5) if d.weights]
        if moved:
            verdict += "<br>Weights moved most: " + ", ".join(f"{d.name} ({d.weights:.3g})" for d in moved) + "."
        self.verdict.setText(verdict)
        self._show_drift(result)
        self.refresh_maps()

    def _show_drift(self, result) -> None:
        self.drift_plot.setVisible(bool(result.drift))
        depth = np.array([d.depth for d in result.drift], dtype=float)
        weights = np.array([np.nan if d.weights is None else d.weights for d in result.drift], dtype=float)
        acts = np.array([np.nan if d.activation is None else d.activation for d in result.drift], dtype=float)
        has_w = ~np.isnan(weights)
        self.weight_curve.setData(depth[has_w], weights[has_w])
        self.activation_curve.setData(depth, acts, connect="finite")
        self._mark(self._session.selection.layer)

    def _mark(self, layer: str | None) -> None:
        drift = self.result.drift if self.result else ()
        found = [d for d in drift if d.name == layer] or [d for d in drift if layer and d.name.startswith(f"{layer}.")][-1:]
        if found:
            value = found[0].weights if found[0].weights is not None else found[0].activation
            self.marker.setData([found[0].depth], [value or 0.0])
        else:
            self.marker.setData([], [])

    def _on_plot_clicked(self, event) -> None:
        if self.result is None or not self.result.drift:
            return
        point = self.drift_plot.getViewBox().mapSceneToView(event.scenePos())
        self.select_depth(int(round(point.x())))

    def select_depth(self, depth: int) -> None:
        """Select the layer at `depth` on the drift plot, in every panel."""
        drift = self.result.drift if self.result else ()
        if drift:
            nearest = min(drift, key=lambda d: abs(d.depth - depth))
            self._session.select(layer=nearest.name)

    def _show_maps(self, result) -> None:
        layer, b, views = result
        if layer != self._session.selection.layer or b is not self.other:   # for an older selection or B
            return
        for side, canvas, title, (name, view) in zip("AB", self.maps, self.map_titles, views):
            if view is None:
                canvas.clear()
                title.setText(f"<b>{side}</b> has no layer {name} with a tensor output"
                              + ("; pick another below" if side == "B" and self.b_layer.isVisible() else ""))
            else:
                canvas.show_image(view.mosaic)
                title.setText(f"<b>{side}</b> {name}: {view.values.shape[0]} channels of "
                              f"{view.values.shape[1]}×{view.values.shape[2]}")
        self._mark(layer)
