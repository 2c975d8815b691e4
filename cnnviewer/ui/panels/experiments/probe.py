"""The Experiments panel's probe tab: how equivariant and how invariant each layer is to a transform.

Plots, against layer depth, the equivariance error (0: the map moves exactly with the input), the
cosine of globally pooled features (1: invariant) and the cosine of the raw maps compared position
for position, for the current image or a folder; hovering a layer says why it behaves so, clicking
selects it everywhere. The engine runs on the job thread; this module loads no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.session import Session
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.experiments.probe_plot import (
    build_plot,
    describe,
    draw,
    plotted,
)
from cnnviewer.ui.widgets.controls import ScrollingRow, labelled_row

JOB = "experiment-probe"
PROGRESS = "Probe"          # the job's progress texts start with it (jobs.progressed carries no key)
TRANSFORMS = {"shift": "shift (px)", "flip": "flip (horizontal)", "rotate": "rotate (°)", "scale": "scale (×)"}
UNITS = {"shift": " px", "flip": "", "rotate": "°", "scale": "×"}

def block_layers(names: tuple[str, ...]) -> list[str]:
    """The network's blocks: modules two names deep (features.3, layer2.1, blocks.4), and top-level
    modules without children (conv1, fc). One point per block gives the trend with depth; every layer
    zigzags between a convolution, its normalisation and its activation."""
    parents = {name.rsplit(".", 1)[0] for name in names if "." in name}
    return [name for name in names if name and (name.count(".") == 1 or ("." not in name and name not in parents))]


def parse_amounts(text: str) -> tuple[float, ...] | None:
    """'1 2 4' or '1, 2, 4' -> (1.0, 2.0, 4.0); empty -> None (the engine's defaults).

    Raises:
        ValueError: a word is not a number.
    """
    words = text.replace(",", " ").split()
    if not words:
        return None
    try:
        return tuple(float(w) for w in words)
    except ValueError:
        raise ValueError(f"amounts: {text!r} is not a list of numbers") from None


class ProbeTab(QWidget):
    """Transform, amounts and source; Run/Cancel with progress; the per-layer plot and its hover text."""

    def __init__(self, session: Session, jobs: UiJobs, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self.result = None            # engine ProbeResult (the mean one for a folder)
        self.consistency = None       # engine Consistency, when computed
        self.folder: Path | None = None
        self._running = False
        self._source_of_result: str | None = None
        self.plot = None              # pyqtgraph PlotWidget, built with the first result
        self.setAcceptDrops(True)
        self.transform = QComboBox()
        for name, text in TRANSFORMS.items():
            self.transform.addItem(text, name)
        self.transform.setToolTip("What is done to the input before each layer's output is compared")
        self.amounts = QLineEdit()
        self.amounts.setPlaceholderText("default")
        self.amounts.setToolTip("Numbers separated by spaces: pixels, degrees or factors. Empty: 1, 2, 3 px and the "
                                "layers' jumps (shifts), ±1 ±2 ±5 ±10° (rotations), 0.8 … 1.25 (scales)")
        self.amounts.setMaximumWidth(110)
        self.boundary = QComboBox()
        self.boundary.addItem("crop moves", "crop")
        self.boundary.addItem("wrap around", "wrap")
        self.boundary.setToolTip("Shifts: move the crop over the photo (new content enters: a real translation), "
                                 "or roll the crop circularly (only circular padding is exactly equivariant then)")
        self.source = QComboBox()
        self.source.addItem("this image", "image")
        self.source.addItem("the folder", "folder")
        self.source.setToolTip("The current image, or the mean over a folder's images (also: drop a folder here)")
        self.folder_button = QPushButton("Folder…")
        self.folder_button.clicked.connect(self._choose_folder)
        self.limit = QSpinBox()
        self.limit.setRange(1, 500)
        self.limit.setValue(16)
        self.limit.setToolTip("A folder: at most this many images, in name order")
        self.with_consistency = QCheckBox("Consistency")
        self.with_consistency.setChecked(True)
        self.with_consistency.setToolTip("Zhang 2019: the share of random pairs of crop shifts (0-31 px, both axes) "
                                         "whose top-1 classes agree")
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(120)
        self.progress.setVisible(False)
        self.layer_choice = QComboBox()
        self.layer_choice.addItem("blocks", "blocks")
        self.layer_choice.addItem("every layer", "all")
        self.layer_choice.setToolTip("One point per block (the trend with depth), or every layer (convolution, "
                                     "normalisation and activation apart)")
        self.amount_choice = QComboBox()
        self.amount_choice.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.amount_choice.setToolTip("Plot the mean over the amounts, or one amount")
        self.amount_choice.currentIndexChanged.connect(lambda _i: self._draw())
        self.info = QLabel("Choose a transform and Run: each layer's output is compared for the moved and the "
                           "original input.")
        self.info.setWordWrap(True)
        self.hover, self.consistency_label = QLabel(""), QLabel("")
        for label in (self.hover, self.consistency_label):
            label.setWordWrap(True)
        self.picture = QWidget()         # what Save grabs: the plot with its captions
        self._picture_layout = QVBoxLayout(self.picture)
        self._picture_layout.setContentsMargins(0, 0, 0, 0)
        self._picture_layout.addWidget(self.consistency_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(ScrollingRow(labelled_row([("Transform", self.transform), ("Amounts", self.amounts),
                                                    ("Shift", self.boundary)])))
        layout.addWidget(ScrollingRow(labelled_row([("Source", self.source), ("", self.folder_button),
                                                    ("Max", self.limit), ("", self.with_consistency),
                                                    ("Layers", self.layer_choice)])))
        layout.addWidget(ScrollingRow(labelled_row([("", self.run_button), ("", self.cancel_button),
                                                    ("", self.progress), ("Plot", self.amount_choice)])))
        layout.addWidget(self.info)
        layout.addWidget(self.picture, 1)
        layout.addWidget(self.hover)
        self.transform.currentIndexChanged.connect(self._on_transform)
        self._on_transform()
        self._update_source()
        session.model_changed.connect(lambda _model: self._forget("A new model: run the probe again."))
        session.image_changed.connect(lambda _image: self._forget("A new image: run the probe again."))
        jobs.cancelled.connect(self._on_cancelled)
        jobs.progressed.connect(self._on_progress)

    # ------------------------------------------------------------------ the shell's contract
    def set_folder(self, folder: Path | None) -> None:
        """The folder the Dataset panel has open (None: none)."""
        self.folder = Path(folder) if folder is not None else None
        self._update_source()

    def result_json(self) -> dict | None:
        """What Save writes: the probe's result (and the consistency), None before a run."""
        if self.result is None:
            return None
        data = self.result.to_json()
        data["source"] = str(self.folder) if self._source_of_result == "folder" else self.result.image
        if self.consistency is not None:
            data["consistency"] = self.consistency.to_json()
        return data

    def result_picture(self) -> QWidget:
        """The plot with its consistency caption, for the PNG."""
        return self.picture

    # ------------------------------------------------------------------ controls
    def _on_transform(self) -> None:
        self.boundary.setEnabled(self.transform.currentData() == "shift")

    def _update_source(self) -> None:
        has_folder = self.folder is not None
        self.source.model().item(1).setEnabled(has_folder)
        self.source.setItemText(1, f"the folder ({self.folder.name})" if has_folder else "the folder")
        if not has_folder and self.source.currentData() == "folder":
            self.source.setCurrentIndex(0)

    def _choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "A folder of images to probe")
        if chosen:
            self.set_folder(Path(chosen))
            self.source.setCurrentIndex(1)

    def dragEnterEvent(self, event) -> None:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if urls and Path(urls[0].toLocalFile()).is_dir():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        folder = Path(event.mimeData().urls()[0].toLocalFile())
        if folder.is_dir():
            self.set_folder(folder)
            self.source.setCurrentIndex(1)

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Probe the current image (or the folder) on the job thread, with progress and Cancel."""
        model, image = self._session.model, self._session.image
        source = self.source.currentData()
        if model is None or (source == "image" and image is None):
            self.info.setText("Load a model and an image first.")
            return
        if source == "folder" and self.folder is None:
            self.info.setText("Choose a folder first (Folder…, or drop one here).")
            return
        try:
            amounts = parse_amounts(self.amounts.text())
        except ValueError as error:
            self.info.setText(str(error))
            return
        transform, boundary = self.transform.currentData(), self.boundary.currentData()
        folder, limit, consistent = self.folder, self.limit.value(), self.with_consistency.isChecked()
        workbench = self._controller.workbench
        layers = block_layers(model.layer_names) if self.layer_choice.currentData() == "blocks" else None

        def work(context):
            from cnnviewer.engine.errors import CnnViewerError
            from cnnviewer.engine.experiments.consistency import consistency_details
            from cnnviewer.engine.experiments.equivariance import mean_result, probe
            from cnnviewer.engine.media.images import load_image
            from cnnviewer.engine.experiments.lesion import folder_images

            summary = workbench().summary(model)
            if source == "image":
                items = [image]
            else:
                items = folder_images(folder)[:limit]   # subfolders too: a folder of one subfolder per class
                if not items:
                    raise ValueError(f"{folder.name}: no image files in this folder")
            parts = len(items) + (1 if consistent else 0)
            results, skipped = [], []
            for number, item in enumerate(items):
                part = context.part(number, parts, f"{PROGRESS}: {transform}, image {number + 1} of {len(items)}")
                try:
                    picture = item if source == "image" else load_image(item)
                except CnnViewerError as error:   # an unreadable file in a folder is skipped, and counted
                    skipped.append(str(error))
                    continue
                results.append(probe(model, picture, transform, amounts, layers=layers or None, boundary=boundary if transform != "rotate"
                                     and transform != "scale" else "crop", summary=summary, cancel=context.cancel,
                                     progress=lambda f, p=part: p.progress(f, PROGRESS)))
            if not results:
                raise ValueError("no readable image")
            found = None
            if consistent:
                part = context.part(parts - 1, parts, f"{PROGRESS}: consistency")
                found = consistency_details(model, items, pairs=5 if source == "folder" else 10,
                                            cancel=context.cancel, progress=lambda f: part.progress(f, PROGRESS))
            name = (f"{len(results)} images in {folder.name}" + (f" ({len(skipped)} unreadable skipped)" if skipped
                                                                  else "")) if source == "folder" else results[0].image
            return (mean_result(results, name) if len(results) > 1 else results[0]), found, source

        self._clear_view()
        self._running = True
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.info.setText(f"Probing {model.name} with {TRANSFORMS[transform]}…")
        self._jobs.submit(JOB, work, on_done=self._on_done, on_error=self._on_error, label="Equivariance probe")

    def cancel(self) -> None:
        if self._running:
            self._jobs.cancel(JOB)

    def _finish(self) -> None:
        self._running = False
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)

    def _on_progress(self, fraction: float, text: str) -> None:
        if self._running and text.startswith(PROGRESS):
            self.progress.setValue(round(1000 * max(0.0, min(1.0, fraction))))

    def _on_done(self, found) -> None:
        self._finish()
        self.result, self.consistency, self._source_of_result = found
        self.amount_choice.blockSignals(True)
        self.amount_choice.clear()
        self.amount_choice.addItem("mean over amounts", -1)
        unit = UNITS[self.result.transform]
        for index, amount in enumerate(self.result.amounts):
            self.amount_choice.addItem(f"{amount:g}{unit}" if self.result.transform != "flip" else "flip", index)
        self.amount_choice.blockSignals(False)
        self._draw()
        top = self.result.labels[0] if self.result.labels else ""
        self.info.setText(f"{self.result.model}, {self.result.image}: {len(self.result.layers)} layers, "
                          f"{self.result.forwards} images through the model in {self.result.seconds:.1f} s"
                          + (f"; top-1 of the first moved input: {top}" if top else "")
                          + ". Hover a layer to see why; click to select it.")
        if self.consistency is not None:
            c = self.consistency
            self.consistency_label.setText(f"Consistency (Zhang 2019): {c.value:.3f} — {c.pairs} random pairs of "
                                           f"crop shifts, share with the same top-1")

    def _on_error(self, message: str) -> None:
        self._finish()
        self.info.setText(message)

    def _on_cancelled(self, key: str) -> None:
        if key == JOB and self._running:
            self._finish()
            self._clear_view()
            self.info.setText("Cancelled: nothing shown. Run again when ready.")

    def _forget(self, text: str) -> None:
        """A new model or image: the plot no longer describes it."""
        was_running = self._running
        if self._running:
            self._jobs.cancel(JOB)
            self._finish()
        if was_running or self.result is not None or self.consistency is not None:
            self._clear_view()
            self.info.setText(text)

    def _clear_view(self) -> None:
        self.result = self.consistency = None
        self._source_of_result = None
        self.consistency_label.setText("")
        self.hover.setText("")
        if self.plot is not None:
            self.plot.clear()

    # ------------------------------------------------------------------ the plot
    def _ensure_plot(self) -> None:
        """The plot, built with the first result (pyqtgraph's first widget costs ~50 ms)."""
        if self.plot is None:
            self.plot, self.legend, self.marker = build_plot()
            self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
            self.plot.scene().sigMouseClicked.connect(self._on_mouse_clicked)
            self._picture_layout.insertWidget(0, self.plot, 1)

    def curves(self) -> dict[str, np.ndarray]:
        """The plotted values per curve (one per layer): the chosen amount, or the mean over amounts."""
        return plotted(self.result, self.amount_choice.currentData())

    def _draw(self) -> None:
        if self.result is not None:
            self._ensure_plot()
            draw(self.plot, self.legend, self.marker, self.result, self.curves())

    def layer_at(self, scene_pos) -> int | None:
        """The layer index under a scene position, if the plot shows one there."""
        if self.plot is None or self.result is None or not self.plot.sceneBoundingRect().contains(scene_pos):
            return None
        x = self.plot.getPlotItem().vb.mapSceneToView(scene_pos).x()
        index = round(x)
        return index if 0 <= index < len(self.result.layers) else None

    def describe(self, index: int) -> str:
        """Hover text for layer `index`: name, type, the plotted values and why."""
        return describe(self.result, index, self.curves())

    def _on_mouse_moved(self, scene_pos) -> None:
        index = self.layer_at(scene_pos)
        if index is None:
            return
        self.marker.setValue(index)
        text = self.describe(index)
        self.hover.setText(text)
        QToolTip.showText(QCursor.pos(), text, self.plot)

    def _on_mouse_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        index = self.layer_at(event.scenePos())
        if index is not None:
            self.select_layer(index)

    def select_layer(self, index: int) -> None:
        """Make layer `index` the session's layer (every panel follows)."""
        self._session.select(layer=self.result.layers[index], channel=None, neuron=None)
