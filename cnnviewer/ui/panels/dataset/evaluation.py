"""The Dataset panel's "Evaluate attribution" tab: which method is most faithful for this model on this folder.

For the ticked methods and metrics, each method's mean ± sd over the indexed images, as a sortable
table (click a header; its tooltip says which way is better). The work runs on the job thread
(engine/attribution/evaluate_cache.evaluate_index) with progress and Cancel; a finished table is
kept beside the index, so asking again shows it at once. The run goes in slices of one (image,
method) pair, so the other panels' work goes on between them. Cancel keeps nothing: a half table
is never shown or cached as if it were finished.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.attribution.evaluate import (
    DEFAULT_METHODS,
    DEFAULT_STEPS,
    METRICS,
    FolderEvaluation,
    better,
    label,
)
from cnnviewer.engine.attribution.target import METHODS
from cnnviewer.engine.session import Session
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.main_thread import Dispatcher
from cnnviewer.ui.widgets.controls import ScrollingRow

KEY = "dataset_evaluate"
SLICE_SECONDS = 0.25      # as indexing: the job thread is free between (image, method) pairs for other panels
INTRO = ("Evaluate scores each ticked method's map on every indexed image: deletion AUC (the target's "
         "probability as the top-ranked pixels are removed: lower is better), insertion AUC (as they are put "
         "back: higher is better) and ROAD (removed pixels filled by noisy linear imputation: higher is better); "
         "CAM methods also get Average Drop and Increase in Confidence.")


def _finish(index, run):
    """On the job thread: the finished run's table, kept beside the index."""
    from cnnviewer.engine.attribution.evaluate_cache import finish
    return finish(index, run)


class SortItem(QTableWidgetItem):
    """A cell shown as text ('0.081 ± 0.020') and sorted by a number (the mean; nan last)."""

    def __init__(self, text: str, key: float) -> None:
        super().__init__(text)
        self.key = key
        self.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)

    def __lt__(self, other: QTableWidgetItem) -> bool:  # Qt's sort calls it
        if not isinstance(other, SortItem):
            return super().__lt__(other)
        if math.isnan(self.key) or math.isnan(other.key):
            return not math.isnan(self.key) and math.isnan(other.key)
        return self.key < other.key


class EvaluationTab(QWidget):
    """Methods and metrics to tick, Evaluate / Cancel, progress, and the table of mean ± sd."""

    def __init__(self, session: Session, jobs: UiJobs, workbench: Callable, index_source: Callable,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench, self._index_source = session, jobs, workbench, index_source
        self._run = 0                 # which evaluation the progress and results belong to
        self._started = 0.0
        self.result = None            # the FolderEvaluation on screen (None: none, or cancelled)
        self.methods: dict[str, QCheckBox] = {}
        methods = QGridLayout()
        for i, method in enumerate(METHODS):
            box = QCheckBox(method)
            box.setChecked(method in DEFAULT_METHODS)
            self.methods[method] = box
            methods.addWidget(box, i // 6, i % 6)
        self.metrics: dict[str, QCheckBox] = {}
        metrics = QHBoxLayout()
        metrics.addWidget(QLabel("Metrics"))
        for metric in METRICS:
            box = QCheckBox(label(metric))
            box.setChecked(True)
            box.setToolTip(f"{label(metric)}: {better(metric)} is better")
            self.metrics[metric] = box
            metrics.addWidget(box)
        self.target = QComboBox()
        self.target.setToolTip("The class whose probability is followed: each image's own top-1, or the class "
                               "selected in the session (e.g. in Predictions)")
        self.steps = QSpinBox()
        self.steps.setRange(2, 1000)
        self.steps.setValue(DEFAULT_STEPS)
        self.steps.setToolTip("Steps of each deletion / insertion curve")
        self.evaluate_button = QPushButton("Evaluate attribution")
        self.evaluate_button.clicked.connect(self.evaluate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setVisible(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMinimumWidth(self.progress.fontMetrics().horizontalAdvance("100% · 59 min left") + 24)
        self.progress.setVisible(False)
        for widget in (self.target, QLabel("steps"), self.steps):
            metrics.addWidget(widget)
        metrics.addStretch(1)
        for widget in (self.progress, self.cancel_button, self.evaluate_button):
            metrics.addWidget(widget)
        self.info = QLabel(INTRO)
        self.info.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(ScrollingRow(methods))    # scroll sideways: never widen the dock column
        layout.addWidget(ScrollingRow(metrics))
        layout.addWidget(self.info)
        layout.addWidget(self.table, 1)
        self._update_target()
        session.selection_changed.connect(lambda _selection: self._update_target())

    # ---------------------------------------------------------------- choices
    def _update_target(self) -> None:
        chosen = self._session.selection.class_index
        model = self._session.model
        keep = self.target.currentIndex()
        self.target.blockSignals(True)
        self.target.clear()
        self.target.addItem("each image's top-1", None)
        if chosen is not None:
            name = model.label(chosen) if model is not None else f"class {chosen}"
            self.target.addItem(f"class {chosen} ({name}), selected", chosen)
        self.target.setCurrentIndex(keep if 0 <= keep < self.target.count() else 0)
        self.target.blockSignals(False)

    def chosen_methods(self) -> list[str]:
        return [method for method, box in self.methods.items() if box.isChecked()]

    def chosen_metrics(self) -> list[str]:
        return [metric for metric, box in self.metrics.items() if box.isChecked()]

    # ---------------------------------------------------------------- running
    def evaluate(self) -> None:
        """Evaluate (or show the cached table of) the ticked methods over the folder's index."""
        from cnnviewer.engine.dataset.partial import is_partial

        index, model = self._index_source(), self._session.model
        methods, metrics, target = self.chosen_methods(), self.chosen_metrics(), self.target.currentData()
        steps = self.steps.value()
        if index is None or model is None:
            self.info.setText("Index a folder first (drop it on this panel): the evaluation runs over its images.")
            return
        if is_partial(index):
            self.info.setText("Indexing is paused: Resume to finish the index, then evaluate its images.")
            return
        if not methods or not metrics:
            self.info.setText("Tick at least one method and one metric.")
            return
        self._run += 1
        run, bench = self._run, self._workbench
        report = Dispatcher.shared().wrap(lambda fraction: self._show_progress(run, fraction))
        last = [-1.0]

        def progress(context, fraction: float) -> None:
            context.check()
            if fraction - last[0] >= 0.002 or fraction >= 1.0:     # a few hundred updates, not thousands
                last[0] = fraction
                report(fraction)
                context.progress(fraction, f"Evaluating attribution: {fraction:.0%}")   # the status bar

        def start(_context):
            from cnnviewer.engine.attribution.evaluate_cache import start_index
            return start_index(bench(), model, index, methods=methods, metrics=metrics, target_class=target,
                               steps=steps)

        def step(found) -> None:
            """A table (cached, or finished and kept) is shown; a run goes on for one more slice."""
            if run != self._run:
                return
            if isinstance(found, FolderEvaluation):
                self._done(run, found)
            elif found.finished:
                self._submit(run, lambda _context: _finish(index, found), step)
            else:
                self._submit(run, lambda context: (found.run(SLICE_SECONDS, context.cancel,
                                                             lambda f: progress(context, f)), found)[1], step)

        self.result = None
        self.table.setRowCount(0)
        self._busy(True)
        self._started = time.perf_counter()
        images = len(index.valid_rows)
        self.info.setText(f"Evaluating {len(methods)} method{'s' * (len(methods) != 1)} on {images:,} "
                          f"image{'s' * (images != 1)}… (a table already made for these choices shows at once; "
                          "the other panels keep working between images)")
        self._submit(run, start, step)

    def _submit(self, run: int, work, then) -> None:
        """One more job of the run; labelled each time, so the status bar shows it from slice to slice."""
        self._jobs.submit(KEY, work, label="Evaluating attribution", on_done=then,
                          on_error=lambda text: self._failed(run, text))

    def cancel(self) -> None:
        """Stop the evaluation; nothing of it is shown or kept."""
        self._jobs.cancel(KEY)
        self._run += 1
        self._busy(False)
        self.result = None
        self.table.setRowCount(0)
        self.info.setText("Evaluation cancelled: no table (a cancelled evaluation keeps nothing, so no half table "
                          "is ever shown as finished). Evaluate starts it again.")

    def clear(self) -> None:
        """Another folder or model: nothing of the old table stays, a running evaluation stops."""
        self._jobs.cancel(KEY)
        self._run += 1
        self._busy(False)
        self.result = None
        self.table.setRowCount(0)
        self.table.setColumnCount(0)
        self.info.setText(INTRO)
        self._update_target()

    def _busy(self, running: bool) -> None:
        self.evaluate_button.setEnabled(not running)
        self.cancel_button.setVisible(running)
        self.progress.setVisible(running)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")

    def _show_progress(self, run: int, fraction: float) -> None:
        if run != self._run or not self.cancel_button.isVisible():
            return
        fraction = max(0.0, min(1.0, fraction))
        self.progress.setValue(int(1000 * fraction))
        elapsed = time.perf_counter() - self._started
        if fraction >= 0.02 and elapsed > 5:             # a folder at 50 steps takes minutes: say how many
            left = elapsed * (1 - fraction) / fraction
            self.progress.setFormat(f"%p% · {left / 60:.0f} min left" if left >= 90 else f"%p% · {left:.0f} s left")

    def _failed(self, run: int, text: str) -> None:
        if run != self._run:
            return
        self._busy(False)
        self.info.setText(f"No evaluation: {text}")

    def _done(self, run: int, found) -> None:
        if run != self._run:
            return
        self._busy(False)
        self.show_result(found)

    # ---------------------------------------------------------------- the table
    def show_result(self, found) -> None:
        """Fill the table: a row per method, a column per score (mean ± sd), n images and seconds."""
        self.result = found
        scores = found.scores()
        arrows = {"lower": " ↓", "higher": " ↑"}        # the direction at a glance; the tooltip says it in words
        headers = ["method", *[label(s) + arrows.get(better(s), "") for s in scores], "n images", "seconds"]
        self.table.setSortingEnabled(False)
        self.table.clear()
        self.table.setColumnCount(len(headers))
        self.table.setRowCount(len(found.methods))
        for column, text in enumerate(headers):
            item = QTableWidgetItem(text)
            score = scores[column - 1] if 0 < column <= len(scores) else None
            if score is not None:
                item.setToolTip(f"{label(score)}: {better(score)} is better (mean ± sd over the images)")
            elif text == "seconds":
                item.setToolTip("Time spent on this method's maps and scores (the run that made the table)")
            else:
                item.setToolTip("Images with this method's scores" if text == "n images" else "Attribution method")
            self.table.setHorizontalHeaderItem(column, item)
        for row, method in enumerate(found.methods):
            self.table.setItem(row, 0, SortItem(method.method, float(row)))
            for column, score in enumerate(scores, start=1):
                mean, sd, count = method.mean(score), method.sd(score), method.count(score)
                cell = SortItem(f"{mean:.3f} ± {sd:.3f}" if count else "—", mean)
                cell.setToolTip(f"{method.method}, {label(score)}: mean {mean:.4f}, sd {sd:.4f} over {count} "
                                f"images; {better(score)} is better" if count else "not computed for this method")
                cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, cell)
            count = max((method.count(score) for score in scores), default=0)
            self.table.setItem(row, len(scores) + 1, SortItem(str(count), float(count)))
            self.table.setItem(row, len(scores) + 2, SortItem(f"{method.seconds:.1f}", method.seconds))
        self.table.setSortingEnabled(True)
        target = "each image's top-1" if found.target is None else f"class {found.target}"
        skipped = f", {len(found.skipped)} unreadable skipped" if found.skipped else ""
        origin = " (kept from an earlier run: shown at once)" if found.cached else ""
        self.info.setText(f"{len(found.images):,} images{skipped}, target {target}, {found.steps} steps, "
                          f"{found.seconds:.1f} s{origin}. Click a column to sort; its tooltip says which way "
                          "is better.")
