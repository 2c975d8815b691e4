"""The lesion tab (Veit et al. 2016): delete residual blocks at test time and see which decisions survive.

A bar per residual block: the share of images whose top-1 stays the intact model's when that block
alone is deleted (grey: blocks that change the resolution or channels and cannot be skipped; hover a
bar for why). Below, the agreement against the number of randomly deleted blocks (mean ± sd over the
draws), and the accuracy when the folder's subfolders name the classes. Torch-free: the study runs in
the job's work function, on the job thread.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QCursor
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.errors import ImageError
from cnnviewer.ui.widgets.controls import ScrollingRow, labelled_row, set_elided

JOB_KEY = "experiment-lesion"
AGREEMENT, ACCURACY = (86, 156, 214), (230, 160, 60)
GREY, PROJECTION = (110, 110, 116), (150, 120, 200)


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    return box


class LesionTab(QWidget):
    """Run the lesion study over a folder (or the current image) and plot it; Save takes its JSON and plots."""

    def __init__(self, session, jobs, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self.folder: Path | None = None
        self.result = None
        self._on_image = False            # the shown result was computed on the current image (no folder)
        self._ran_on = ""
        self._running = False
        self._fraction = 0.0              # written by the job thread, read by the timer
        self._started = 0.0
        self._plots: QWidget | None = None   # built with the first result: two plots cost ~40 ms
        self.folder_label = QLabel("")
        self.folder_button = QPushButton("Folder…")
        self.folder_button.setToolTip("The images to delete blocks on (also: drop a folder here). Subfolders "
                                      "named after classes (or ImageNet synsets) give the accuracy too")
        self.limit = _spin(1, 100000, 64, "At most this many images, in name order")
        self.random = _spin(0, 32, 6, "Delete 1 to this many randomly chosen identity-skip blocks at once (0: none)")
        self.repeats = _spin(1, 50, 5, "Random draws per number of deleted blocks (the same draws for every image)")
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Delete each residual block alone, then random sets of them, and count the "
                                   "decisions that stay the intact model's. The model itself is never changed")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(10)
        self.progress.hide()
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.container = QVBoxLayout()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(ScrollingRow(labelled_row([("", self.run_button), ("", self.cancel_button),
                                                    ("", self.folder_button), ("", self.folder_label)])))
        layout.addWidget(ScrollingRow(labelled_row([("Images", self.limit), ("Random up to", self.random),
                                                    ("Draws", self.repeats)])))
        layout.addWidget(self.progress)
        layout.addLayout(self.container, 1)
        layout.addWidget(self.info)
        self._timer = QTimer(self, interval=150)
        self._timer.timeout.connect(self._show_progress)
        self.folder_button.clicked.connect(self._choose_folder)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.setAcceptDrops(True)
        session.model_changed.connect(self._on_model_changed)
        session.image_changed.connect(self._on_image_changed)
        jobs.cancelled.connect(self._on_cancelled)
        self.set_folder(None)

    # ---------------------------------------------------------------- the shell's calls
    def set_folder(self, folder: Path | None) -> None:
        """The folder to study (the Dataset panel's, or one chosen here); None: the current image alone."""
        self.folder = Path(folder) if folder is not None else None
        text = str(self.folder) if self.folder is not None else "no folder: the current image alone"
        set_elided(self.folder_label, text, 200)
        if not self._running and self.result is None:
            self.info.setText("Run deletes each residual block in turn over "
                              f"{'the folder' if self.folder else 'the current image'}.")

    def result_json(self) -> dict | None:
        return None if self.result is None else self.result.to_json()

    def result_picture(self) -> QWidget:
        return self.plots

    # ---------------------------------------------------------------- folder
    def _choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Folder of images", str(self.folder or Path.home()))
        if chosen:
            self.set_folder(Path(chosen))

    def dragEnterEvent(self, event) -> None:
        if any(Path(url.toLocalFile()).is_dir() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        folders = [Path(url.toLocalFile()) for url in event.mimeData().urls() if Path(url.toLocalFile()).is_dir()]
        if folders:
            self.set_folder(folders[0])
            event.acceptProposedAction()

    # ---------------------------------------------------------------- running
    def run(self) -> None:
        model, image, folder = self._session.model, self._session.image, self.folder
        if model is None or (folder is None and image is None):
            self.info.setText("Load a model and an image (or choose a folder) first.")
            return
        limit, counts, repeats = self.limit.value(), range(1, self.random.value() + 1), self.repeats.value()

        def work(context):
            from cnnviewer.engine.experiments.lesion import (
                folder_images,
                folder_labels,
                lesion_study,
            )
            if folder is not None:
                paths = folder_images(folder)
                if not paths:
                    raise ImageError(f"{folder.name}: no image files in this folder or its subfolders")
                labels = folder_labels(folder, model, paths)
                images, labels = paths[:limit], (labels[:limit] if labels is not None else None)
            else:
                images, labels = [image], None

            def report(fraction: float) -> None:
                self._fraction = fraction
                context.progress(fraction, "Lesion study")
            return lesion_study(model, images, labels=labels, random_counts=counts, repeats=repeats,
                                cancel=context.cancel, progress=report)

        self.clear("")
        self._on_image = folder is None
        self._ran_on = f"the folder {folder.name}" if folder is not None else "the current image"
        self._running, self._fraction, self._started = True, 0.0, time.perf_counter()
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.progress.show()
        self.info.setText(f"Deleting {model.title}'s residual blocks over "
                          f"{'the folder ' + folder.name if folder else 'the current image'}…")
        self._timer.start()
        self._jobs.submit(JOB_KEY, work, on_done=self._on_done, on_error=self._on_error, label="Lesion study")

    def cancel(self) -> None:
        if self._running:
            self._jobs.cancel(JOB_KEY)

    def _stopped(self) -> None:
        self._running = False
        self._timer.stop()
        self.progress.hide()
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _show_progress(self) -> None:
        fraction = min(max(self._fraction, 0.0), 1.0)
        self.progress.setValue(int(fraction * 1000))
        elapsed = time.perf_counter() - self._started
        left = f", about {elapsed * (1 - fraction) / fraction:.0f} s left" if fraction > 0.02 else ""
        self.info.setText(f"Lesion study: {fraction:.0%}{left}")

    def _on_done(self, result) -> None:
        self._stopped()
        self.show_result(result)

    def _on_error(self, message: str) -> None:
        self._stopped()
        self.info.setText(message)

    def _on_cancelled(self, key: str) -> None:
        if key == JOB_KEY and self._running:
            self._stopped()
            self.clear("Cancelled: run again when you are ready.")

    def _on_model_changed(self, _model) -> None:
        self._forget("A new model: run again.")

    def _on_image_changed(self, _image) -> None:
        if self._on_image and (self.result is not None or self._running):
            self._forget("A new image: run again.")

    def _forget(self, text: str) -> None:
        if self._running:
            self._jobs.cancel(JOB_KEY)
            self._stopped()
        if self.result is not None or text:
            self.clear(text)

    # ---------------------------------------------------------------- drawing
    @property
    def plots(self) -> QWidget:
        """The bar chart and the random-deletion curve (what Save grabs), built on first use."""
        if self._plots is None:
            self._plots = QWidget()
            column = QVBoxLayout(self._plots)
            column.setContentsMargins(0, 0, 0, 0)
            self.bar_plot = pg.PlotWidget(background=(30, 30, 34))
            self.bar_plot.setLabel("left", "agreement with intact top-1")
            self.bar_plot.setLabel("bottom", "deleted block")
            self.bar_plot.setYRange(0, 1.05, padding=0)
            self.bar_plot.setMouseEnabled(False, False)
            self.bar_plot.hideButtons()
            self.bar_plot.scene().sigMouseMoved.connect(self._on_bar_hover)
            self.curve_plot = pg.PlotWidget(background=(30, 30, 34))
            self.curve_plot.setLabel("left", "agreement")
            self.curve_plot.setLabel("bottom", "randomly deleted blocks")
            self.curve_plot.setYRange(0, 1.05, padding=0)
            self.curve_plot.showGrid(x=True, y=True, alpha=0.2)
            self.curve_legend = self.curve_plot.addLegend(offset=(-10, 10), brush=pg.mkBrush(30, 30, 34, 190))
            column.addWidget(self.bar_plot, 3)
            column.addWidget(self.curve_plot, 2)
            self.container.addWidget(self._plots)
            self._plots.show()   # the layout only queues the show: Save must not grab a hidden picture
        return self._plots

    def clear(self, text: str = "") -> None:
        self.result = None
        if self._plots is not None:
            self.bar_plot.clear()
            self.curve_plot.clear()
            self.curve_legend.clear()
        self.info.setText(text)

    def bar_heights(self) -> list[float | None]:
        """The agreement drawn per block (None: a grey, non-deletable block)."""
        return [] if self.result is None else [lesion.agreement for lesion in self.result.per_block]

    def hover_text(self, index: int) -> str:
        """What the tooltip over bar `index` says."""
        if self.result is None or not 0 <= index < len(self.result.blocks):
            return ""
        block, lesion = self.result.blocks[index], self.result.per_block[index]
        shapes = f"{'×'.join(map(str, block.in_shape))} → {'×'.join(map(str, block.out_shape))}"
        if lesion.agreement is None:
            return f"{block.name} ({shapes}): cannot be deleted. {block.reason}"
        text = f"{block.name} ({shapes}) deleted: {lesion.agreement:.1%} of top-1 decisions unchanged"
        if lesion.accuracy is not None:
            text += f", accuracy {lesion.accuracy:.1%}"
        return text + f". {block.reason}"

    def _on_bar_hover(self, position) -> None:
        if self.result is None:
            return
        point = self.bar_plot.getViewBox().mapSceneToView(position)
        text = self.hover_text(round(point.x()))
        self.bar_plot.setToolTip(text)
        if text:
            QToolTip.showText(QCursor.pos(), text, self.bar_plot)

    def show_result(self, result) -> None:
        """Draw a LesionResult: bars per block, the random-deletion curve, and a one-line summary."""
        _ = self.plots   # built now, with the first result
        self.clear("")
        self.result = result
        labelled = result.intact_accuracy is not None
        width = 0.4 if labelled else 0.8
        xs = np.arange(len(result.blocks), dtype=float)
        live = [i for i, lesion in enumerate(result.per_block) if lesion.agreement is not None]
        grey = [i for i, lesion in enumerate(result.per_block) if lesion.agreement is None]
        self.grey_bars = pg.BarGraphItem(x=xs[grey], height=[1.0] * len(grey), width=0.8,
                                         brush=QBrush(QColor(*GREY, 150), Qt.BrushStyle.BDiagPattern),
                                         pen=pg.mkPen(*GREY, 90))   # hatched: not measured, not "1.0"
        brushes = [pg.mkBrush(*(PROJECTION if result.blocks[i].skip == "projection" else AGREEMENT)) for i in live]
        self.agreement_bars = pg.BarGraphItem(x=xs[live] - (width / 2 if labelled else 0), width=width, pen=None,
                                              height=[result.per_block[i].agreement for i in live], brushes=brushes)
        self.bar_plot.addItem(self.grey_bars)
        self.bar_plot.addItem(self.agreement_bars)
        self.bar_plot.setLabel("left", "agreement (blue), accuracy (orange)" if labelled
                               else "agreement with intact top-1")
        self.curve_plot.setLabel("left", "share of images" if labelled else "agreement")
        if labelled:
            accuracy = [result.per_block[i].accuracy for i in live]
            self.bar_plot.addItem(pg.BarGraphItem(x=xs[live] + width / 2, height=accuracy, width=width,
                                                  brush=pg.mkBrush(*ACCURACY), pen=None))
            self.bar_plot.addItem(pg.InfiniteLine(result.intact_accuracy, angle=0,
                                                  pen=pg.mkPen(ACCURACY, style=Qt.PenStyle.DashLine)))
        short = [block.name.split(".", 1)[-1] if block.name.count(".") else block.name for block in result.blocks]
        every = max(1, -(-len(short) // 12))
        self.bar_plot.getAxis("bottom").setTicks([[(i, s) for i, s in enumerate(short) if i % every == 0]])
        self.bar_plot.setXRange(-0.6, len(result.blocks) - 0.4, padding=0)
        self.bar_plot.setToolTip("Hover a bar: which block, what deleting it did, and why grey ones cannot be deleted")
        self._draw_curve(result)
        worst = min(((lesion.agreement, lesion.block) for lesion in result.per_block if lesion.agreement is not None),
                    default=None)
        untrained = "" if result.trained else " (untrained: random weights, the numbers mean nothing)"
        text = (f"{result.model}{untrained} over {self._ran_on}: {len(result.images)} "
                f"image{'s' * (len(result.images) != 1)}, "
                f"{sum(b.deletable for b in result.blocks)} of {len(result.blocks)} blocks deletable, "
                f"{result.seconds:.1f} s.")
        if worst is not None:
            text += f" Deleting {worst[1]} changes the most decisions ({1 - worst[0]:.0%})."
        if not all(b.deletable for b in result.blocks):
            text += " Hatched: blocks that cannot be skipped (hover for why)."
        if labelled:
            text += f" Intact accuracy {result.intact_accuracy:.1%} (orange)."
        if result.skipped:
            text += f" {len(result.skipped)} unreadable file(s) skipped."
        self.info.setText(text)

    def _draw_curve(self, result) -> None:
        if not result.random:
            return
        ks = np.array([0] + [entry.count for entry in result.random], dtype=float)
        for name, colour, means, sds in (
                ("agreement", AGREEMENT, [1.0] + [e.agreement_mean for e in result.random],
                 [0.0] + [e.agreement_sd for e in result.random]),
                ("accuracy", ACCURACY, [result.intact_accuracy] + [e.accuracy_mean for e in result.random],
                 [0.0] + [e.accuracy_sd for e in result.random])):
            if means[0] is None:
                continue
            means, sds = np.array(means, dtype=float), np.array(sds, dtype=float)
            self.curve_plot.addItem(pg.ErrorBarItem(x=ks, y=means, height=2 * sds, beam=0.15, pen=pg.mkPen(colour)))
            self.curve_plot.plot(ks, means, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6,
                                 symbolBrush=colour, name=f"{name} (mean ± sd)")
        self.curve_plot.setXRange(-0.3, ks[-1] + 0.3, padding=0)
