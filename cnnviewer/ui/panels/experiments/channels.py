"""Which channels matter: every channel of the selected layer knocked out alone, ranked by the drop of
the target (a class, or a later layer's channel or neuron), as a sorted table and a bar chart.

Clicking a row or a bar selects that channel in every panel; "Knock out" hands the chosen channels to
the window's interventions when the controller offers them. torch-free: the engine runs in the job.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.session import Selection, Session
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.widgets.controls import ScrollingRow, labelled_row

JOB = "experiment-channels"
PROGRESS = "Ranking channels"        # the progress text's start: this tab's reports, not another job's
TARGETS = ("top-1 class", "chosen class", "pinned channel")
BAR = (86, 156, 214)
PICKED = (240, 170, 60)


class _Number(QTableWidgetItem):
    """A cell that sorts by its value, not its text."""

    def __init__(self, value: float, text: str) -> None:
        super().__init__(text)
        self.value = value
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other) -> bool:
        return self.value < getattr(other, "value", -math.inf)


class ChannelsTab(QWidget):
    """Rank the selected layer's channels by how much the target drops when each is knocked out."""

    def __init__(self, session: Session, jobs: UiJobs, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self.result = None                 # the ChannelImportance shown, or None
        self._described = ""               # its target, in words (with the class name)
        self._pinned: Target | None = None
        self._running = False
        self.plot: pg.PlotWidget | None = None   # built with the first result (~30 ms)
        self.bars: pg.BarGraphItem | None = None
        self.layer_label = QLabel()
        self.layer_label.setWordWrap(True)
        self.target_kind = QComboBox()
        self.target_kind.addItems(TARGETS)
        self.target_kind.setToolTip("What the knock-outs are measured on: the predicted class, the class chosen in "
                                    "Gradients, Synthesis or the predictions, or a later layer's channel (or neuron) "
                                    "pinned with the button")
        self.pin_button = QPushButton("Pin selected channel")
        self.pin_button.setToolTip("Make the channel (and neuron) selected now the target; then select an earlier "
                                   "layer and rank its channels by how much they feed it")
        self.target_label = QLabel()
        self.mode = QComboBox()
        self.mode.addItem("zero", "zero")
        self.mode.addItem("mean", "mean")
        self.mode.setToolTip("A knocked-out channel becomes 0, or its own mean over this image (keeps its "
                             "average, removes its pattern)")
        self.run_button = QPushButton("Rank channels")
        self.run_button.setToolTip("Knock out each channel of the layer alone (batched: the network before the "
                                   "layer runs once per batch) and measure the target's drop")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumHeight(6)
        self.progress.setTextVisible(False)
        self.progress.hide()         # shown while ranking
        self.knock_button = QPushButton("Knock out")
        self.knock_button.setEnabled(False)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["channel", "drop", "% of intact"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setToolTip("Click a channel to select it in every panel; Ctrl/Shift-click several to knock "
                              "them out together")
        self.results = QSplitter(Qt.Orientation.Vertical)
        self.results.addWidget(self.table)
        self.info = QLabel("Select a layer, then Rank channels.")
        self.info.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.layer_label)
        layout.addWidget(ScrollingRow(labelled_row([("Target", self.target_kind), ("", self.pin_button)])))
        layout.addWidget(self.target_label)
        layout.addWidget(ScrollingRow(labelled_row([("Knock-out", self.mode), ("", self.run_button),
                                                    ("", self.cancel_button)])))
        layout.addWidget(self.progress)
        layout.addWidget(self.results, 1)
        layout.addWidget(ScrollingRow(labelled_row([("", self.knock_button)])))
        layout.addWidget(self.info)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(lambda: self._jobs.cancel(JOB))
        self.pin_button.clicked.connect(self._pin)
        self.knock_button.clicked.connect(self._knock_out)
        self.target_kind.currentIndexChanged.connect(lambda _index: self._show_target())
        self.table.cellClicked.connect(self._on_cell_clicked)
        self.table.itemSelectionChanged.connect(self._update_knock_button)
        session.selection_changed.connect(self._on_selection_changed)
        session.forward_changed.connect(self._on_forward_changed)
        session.model_changed.connect(self._on_input_changed)
        session.image_changed.connect(self._on_input_changed)
        jobs.progressed.connect(self._on_progressed)
        jobs.cancelled.connect(self._on_cancelled)
        self._update_knock_button()
        self._on_selection_changed(session.selection)

    # ------------------------------------------------------------------ the shell's calls
    def set_folder(self, folder: Path | None) -> None:
        """One image is enough here: the folder is not used."""

    def result_json(self) -> dict | None:
        if self.result is None:
            return None
        model = self._session.model
        return {**self.result.to_json(), "model": model.name if model else None, "target_description": self._described}

    def result_picture(self) -> QWidget:
        return self.results

    # ------------------------------------------------------------------ target and layer
    def target(self) -> Target | None:
        """The target as chosen now (None: nothing to measure yet)."""
        kind = self.target_kind.currentText()
        if kind == "pinned channel":
            return self._pinned
        chosen = self._session.selection.class_index
        if kind == "chosen class" and chosen is not None:
            return Target(class_index=chosen)
        forward = self._session.forward
        return Target(class_index=forward.predictions[0].index) if forward and forward.predictions else None

    def describe(self, target: Target) -> str:
        model = self._session.model
        text = target.describe()
        if target.class_index is not None and model is not None and target.class_index < len(model.categories):
            text += f" ({model.categories[target.class_index]})"
        return text

    def _show_target(self) -> None:
        target = self.target()
        kind = self.target_kind.currentText()
        if target is None:
            text = ("Pin a channel: select it (in Feature maps), press Pin, then select an earlier layer."
                    if kind == "pinned channel" else "Waiting for the model to run on the image.")
        else:
            text = f"Measured on {self.describe(target)}"
            if kind == "chosen class" and self._session.selection.class_index is None:
                text += " (no class chosen: the top-1)"
        self.target_label.setText(text)

    def _pin(self) -> None:
        selection = self._session.selection
        if selection.layer is None or selection.channel is None:
            self.info.setText("Select a channel first (click it in Feature maps), then Pin.")
            return
        self._pinned = Target(layer=selection.layer, channel=selection.channel, neuron=selection.neuron)
        self.target_kind.setCurrentText("pinned channel")
        self._show_target()

    def _channels_of(self, layer: str | None) -> int | None:
        forward = self._session.forward
        for info in forward.layers if forward is not None else ():
            if info.name == layer and info.output_shape:
                return info.output_shape[0]
        return None

    def _on_selection_changed(self, selection: Selection) -> None:
        layer = selection.layer
        channels = self._channels_of(layer)
        self.layer_label.setText(f"Layer: <b>{layer}</b>" + (f" ({channels} channels)" if channels else "")
                                 + " — select another in any panel" if layer else "Layer: none — select one in "
                                 "Feature maps, Architecture or the summary")
        self.pin_button.setEnabled(selection.channel is not None)
        self._show_target()
        self._highlight(selection.channel if self.result is not None and layer == self.result.layer else None)
        if not self._running:
            self.run_button.setEnabled(bool(layer))

    def _on_forward_changed(self, _summary) -> None:
        self._on_selection_changed(self._session.selection)

    def _on_input_changed(self, _what) -> None:
        """A new model or image: nothing shown belongs to it any more."""
        if self._running:
            self._jobs.cancel(JOB)
        if self._session.model is None or self._pinned is not None and \
                self._pinned.layer not in self._session.model.layer_names:
            self._pinned = None
        had = self.result is not None
        self._clear()
        if had:
            self.info.setText("A new model or image: Rank channels again.")
        self._show_target()

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        model, image, layer = self._session.model, self._session.image, self._session.selection.layer
        target = self.target()
        if model is None or image is None or not layer:
            self.info.setText("Load a model and an image and select a layer first.")
            return
        if target is None:
            self._show_target()
            self.info.setText(self.target_label.text())
            return
        mode, workbench, described = self.mode.currentData(), self._controller.workbench, self.describe(target)

        def work(context):
            from cnnviewer.engine.experiments.importance import channel_importance, channels_last
            from cnnviewer.engine.runtime.inference import prepare_input

            inputs = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels).tensor
            return channel_importance(model, inputs, layer, target, mode=mode,
                                      channels_last=channels_last(workbench(), model, layer), cancel=context.cancel,
                                      progress=lambda f: context.progress(f, f"{PROGRESS} of {layer}: {f:.0%}"))

        self._clear()
        self._described = described
        self._set_running(True)
        self.info.setText(f"Knocking out each channel of {layer} ({mode}) and measuring {described}…")
        self._jobs.submit(JOB, work, on_done=self._on_done, on_error=self._on_failed,
                          label=f"{PROGRESS} of {layer}")

    def _set_running(self, running: bool) -> None:
        self._running = running
        self.run_button.setEnabled(not running and bool(self._session.selection.layer))
        self.cancel_button.setEnabled(running)
        self.progress.setValue(0)
        self.progress.setVisible(running)

    def _on_progressed(self, fraction: float, text: str) -> None:
        if self._running and text.startswith(PROGRESS):
            self.progress.setValue(int(fraction * 1000))

    def _on_cancelled(self, key: str) -> None:
        if key == JOB and self._running:
            self._set_running(False)
            self._clear()
            self.info.setText("Cancelled: nothing ranked. Rank channels to start again.")

    def _on_failed(self, message: str) -> None:
        self._set_running(False)
        self.info.setText(message)

    def _on_done(self, result) -> None:
        self._set_running(False)
        self.result = result
        self._fill_table(result)
        self._draw_bars(result)
        best = result.top(1)
        lead = (f" Channel {best[0][0]} matters most: without it {self._described} falls by {best[0][1]:.3g}."
                if best else "")
        rises = int((result.drops < 0).sum())
        rising = (f" Without {rises} of them it rises (negative drops): they argued against it." if rises else "")
        self.info.setText(f"{result.channels} channels of {result.layer}, {result.mode} knock-out, "
                          f"{self._described} = {result.intact:.4g} intact; {result.forwards} forward passes in "
                          f"{result.seconds:.1f} s.{lead}{rising} Click a channel to select it everywhere.")
        self._highlight(self._session.selection.channel if self._session.selection.layer == result.layer else None)

    # ------------------------------------------------------------------ the views
    def _clear(self) -> None:
        self.result = None
        self.table.setRowCount(0)
        if self.bars is not None:
            self.bars.setOpts(x=[], height=[], brushes=None)
        self._update_knock_button()

    def _fill_table(self, result) -> None:
        self.table.setSortingEnabled(False)
        self.table.setRowCount(result.channels)
        for row, channel in enumerate(result.order):
            channel = int(channel)
            drop, share = float(result.drops[channel]), result.percent(channel)
            self.table.setItem(row, 0, _Number(channel, str(channel)))
            self.table.setItem(row, 1, _Number(drop, f"{drop:.4g}"))
            self.table.setItem(row, 2, _Number(share if not math.isnan(share) else -math.inf,
                                               "—" if math.isnan(share) else f"{share:.1f} %"))
        self.table.setSortingEnabled(True)
        self.table.sortItems(1, Qt.SortOrder.DescendingOrder)

    def _draw_bars(self, result) -> None:
        if self.plot is None:
            self.plot = pg.PlotWidget(background=(30, 30, 34))
            self.plot.setLabel("bottom", "channel")
            self.plot.setLabel("left", "drop of the target")
            self.plot.getAxis("left").enableAutoSIPrefix(False)
            self.plot.setMouseEnabled(x=True, y=False)
            self.plot.setMinimumHeight(120)
            self.bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush=BAR)
            self.plot.addItem(self.bars)
            self.plot.scene().sigMouseClicked.connect(self._on_plot_clicked)
            self.results.addWidget(self.plot)
            self.results.setSizes([200, 160])
        x = np.arange(result.channels)
        self.bars.setOpts(x=x, height=result.drops, width=0.8, brushes=None, brush=BAR)
        self.plot.setXRange(-1, result.channels, padding=0.01)
        self.plot.enableAutoRange(axis="y")

    def _highlight(self, channel: int | None) -> None:
        """Colour the selected channel's bar."""
        if self.bars is None or self.result is None:
            return
        brushes = [pg.mkBrush(PICKED if c == channel else BAR) for c in range(self.result.channels)]
        self.bars.setOpts(brushes=brushes)

    def _on_plot_clicked(self, event) -> None:
        if self.result is None or self.plot is None:
            return
        point = self.plot.getViewBox().mapSceneToView(event.scenePos())
        channel = round(point.x())
        if 0 <= channel < self.result.channels:
            self.select_channel(channel)

    def _on_cell_clicked(self, row: int, _column: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.select_channel(int(item.value))

    def select_channel(self, channel: int) -> None:
        """Show `channel` of the ranked layer in every panel."""
        if self.result is not None:
            self._session.select(layer=self.result.layer, channel=channel)

    def chosen_channels(self) -> list[int]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [int(self.table.item(row, 0).value) for row in rows if self.table.item(row, 0) is not None]

    def _update_knock_button(self) -> None:
        self.knock_button.setEnabled(self.result is not None and bool(self.chosen_channels()))
        self.knock_button.setToolTip("Knock the chosen channels out in every panel (the strip above lists "
                                     "the knock-outs; each can be removed there)")

    def _knock_out(self) -> None:
        channels = self.chosen_channels()
        if self.result is None or not channels:
            return
        from cnnviewer.engine.experiments.ablate_spec import Knockout
        self._controller.add_knockout(Knockout(self.result.layer, tuple(channels)))
        self.info.setText(f"Knocked out {len(channels)} channel{'s' * (len(channels) != 1)} of {self.result.layer}: "
                          f"{', '.join(map(str, channels[:8]))}{'…' if len(channels) > 8 else ''}.")
