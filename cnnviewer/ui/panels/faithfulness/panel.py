"""Faithfulness: can a heat map be trusted? Perturbation curves and the randomization sanity check.

The Gradients panel shows what each method highlights; this panel measures whether the model
actually depends on it, for the same model, image and class.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QComboBox, QLabel, QTabWidget, QVBoxLayout, QWidget

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.session import Session
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.faithfulness.curves import CurvesView
from cnnviewer.ui.panels.gradient_options import class_map_output, region_words
from cnnviewer.ui.panels.faithfulness.sanity import SanityView, sanity_grid
from cnnviewer.ui.widgets.controls import ScrollingRow, labelled_row, on_screen

SANITY_OPTIONS = {"integrated-gradients": {"steps": 16}, "smoothgrad": {"samples": 10}}   # per stage: keep it quick


class FaithfulnessPanel(QWidget):
    """Curves (deletion, insertion, ROAD) of the chosen methods, and the sanity check, for one class."""

    def __init__(self, session: Session, jobs: UiJobs, workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench = session, jobs, workbench
        self._top_class: int | None = None
        self._region: tuple | None = None      # the session's region as last followed
        self._computing = ""
        self._running: set[str] = set()       # job keys submitted and not yet ended: only those can be cancelled
        self.target_kind = QComboBox()
        self.target_kind.addItems(["top-1 class", "chosen class"])
        self.target_kind.setToolTip("The class whose probability the curves follow: the prediction, or the class "
                                    "chosen in Gradients, Synthesis or by clicking a prediction bar")
        self.target_label = QLabel("")
        self.curves = CurvesView()
        self._sanity: SanityView | None = None    # built when its tab is first shown: two plots cost ~40 ms
        self.tabs = QTabWidget()
        self.tabs.addTab(self.curves, "Curves")
        self.tabs.addTab(QWidget(), "Sanity check")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(ScrollingRow(labelled_row([("Target", self.target_kind), ("", self.target_label)])))
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.info)
        self._debounce = QTimer(self, singleShot=True, interval=150)
        self._debounce.timeout.connect(self.refresh)
        self.curves.settings_changed.connect(self._debounce.start)
        self.target_kind.currentIndexChanged.connect(self._on_target_changed)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        session.forward_changed.connect(self._on_forward)
        session.image_changed.connect(lambda _image: self._forget())
        session.model_changed.connect(lambda _model: self._forget())
        session.selection_changed.connect(self._on_selection_changed)
        jobs.cancelled.connect(self._on_cancelled)

    @property
    def sanity(self) -> SanityView:
        """The sanity check's view, built on first use."""
        if self._sanity is None:
            self._sanity = SanityView()
            self._sanity.run_button.clicked.connect(self.run_sanity)
            current, placeholder = self.tabs.currentIndex(), self.tabs.widget(1)
            self.tabs.blockSignals(True)
            self.tabs.removeTab(1)
            self.tabs.insertTab(1, self._sanity, "Sanity check")
            self.tabs.setCurrentIndex(current)
            self.tabs.blockSignals(False)
            placeholder.deleteLater()
        return self._sanity

    def _on_tab_changed(self, index: int) -> None:
        if index == 1:
            self.sanity
        self._debounce.start()

    # ---------------------------------------------------------------- target
    def target(self) -> Target | None:
        """The class followed; for a class-map model, over the session's region (else the whole map):
        the curves then follow that class's score there, as the Gradients panel explains it."""
        selection = self._session.selection
        box = selection.region if class_map_output(self._session.forward) is not None else None
        if self.target_kind.currentText() == "chosen class" and selection.class_index is not None:
            return Target(class_index=selection.class_index, box=box)
        return None if self._top_class is None else Target(class_index=self._top_class, box=box)

    def describe(self, target: Target) -> str:
        model = self._session.model
        index = target.class_index
        name = model.categories[index] if model is not None and 0 <= index < len(model.categories) else ""
        return f"class {index}" + (f" ({name})" if name else "") + region_words(target, self._session.forward)

    def _on_forward(self, summary) -> None:
        self._top_class = summary.predictions[0].index if summary.predictions else None
        self._debounce.start()

    def _on_selection_changed(self, selection) -> None:
        region_changed = selection.region != self._region
        self._region = selection.region
        if self.target_kind.currentText() == "chosen class" or \
                (region_changed and class_map_output(self._session.forward) is not None):
            self._on_target_changed()

    def _on_target_changed(self) -> None:
        if self._sanity is not None and self._sanity.result is not None:
            self._sanity.clear("The target changed: run the check again.")
        self._debounce.start()

    def _forget(self) -> None:
        """A new image or model: nothing shown belongs to it any more."""
        self._jobs.cancel("faithfulness")
        self._jobs.cancel("sanity")
        self.curves.clear()
        if self._sanity is not None and self._sanity.result is not None:
            self._sanity.clear("A new image or model: run the check again.")

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override: compute only when looked at
        super().showEvent(event)
        self._debounce.start()

    # ---------------------------------------------------------------- curves
    def refresh(self) -> None:
        """The chosen methods' maps and their curves, on the job thread, with progress and Cancel."""
        model, image, target = self._session.model, self._session.image, self.target()
        if self._session.forward is None or model is None or image is None or not on_screen(self):
            return
        if self.tabs.currentWidget() is not self.curves:
            return
        if target is None:
            self.info.setText("Choose a class (in Gradients, Synthesis or by clicking a prediction).")
            return
        settings = self.curves.settings()
        methods = settings["methods"]
        if not methods:
            self.curves.clear()
            self.info.setText("Tick at least one method.")
            return
        self.target_label.setText(self.describe(target))
        workbench = self._workbench

        def work(context):
            from cnnviewer.engine.attribution.faithfulness import evaluate_result
            results = {}
            for number, method in enumerate(methods):
                part = context.part(number, len(methods), f"faithfulness of {method}")
                result = workbench().gradient(model, image, method, target, part)
                results[method] = evaluate_result(workbench(), model, image, result, metrics=settings["metrics"],
                                                  steps=settings["steps"], substrate=settings["substrate"],
                                                  context=part)
            return results

        self.curves.clear()
        self._computing = f"faithfulness of {', '.join(methods)} for {self.describe(target)}"
        self.info.setText(f"Computing {self._computing}…")
        self._running.add("faithfulness")
        self._jobs.submit("faithfulness", work, on_done=self._on_curves, on_error=self._on_curves_failed,
                          label="Measuring faithfulness")

    def _on_curves_failed(self, message: str) -> None:
        self._running.discard("faithfulness")
        self.info.setText(message)

    def _on_curves(self, results: dict) -> None:
        self._running.discard("faithfulness")
        self.curves.show_results(results)
        best = min(results.values(), key=lambda r: r.scores.get("deletion", float("inf")))
        self.info.setText(f"{len(results)} methods for {self.target_label.text()}. Lowest deletion AUC: "
                          f"{best.method} ({best.scores['deletion']:.3f}). Hover over the plot to see the "
                          "perturbed image at that step; click a curve to pick its method.")

    # ---------------------------------------------------------------- sanity
    def run_sanity(self) -> None:
        model, image, target = self._session.model, self._session.image, self.target()
        if model is None or image is None or target is None:
            self.sanity.clear("Load a model and an image first.")
            return
        settings = self.sanity.settings()
        if not settings["methods"]:
            self.sanity.clear("Tick at least one method.")
            return
        methods = {method: dict(SANITY_OPTIONS.get(method, {})) for method in settings["methods"]}
        workbench = self._workbench

        def work(context):
            from cnnviewer.engine.attribution.sanity import sanity_check
            result = sanity_check(workbench(), model, image, target, methods, mode=settings["mode"],
                                  granularity=settings["granularity"], context=context)
            return result, sanity_grid(result)     # the picture drawn here, not on the GUI thread

        self.sanity.clear(f"Randomizing a copy of {model.name} ({settings['mode']})…")
        self._computing = f"the sanity check of {', '.join(methods)}"
        self._running.add("sanity")
        self._jobs.submit("sanity", work, on_done=self._on_sanity, on_error=self._on_sanity_failed,
                          label="Sanity check: randomizing the model")

    def _on_sanity_failed(self, message: str) -> None:
        self._running.discard("sanity")
        self.sanity.clear(message)

    def _on_sanity(self, found) -> None:
        self._running.discard("sanity")
        result, grid = found
        self.sanity.show_result(result, grid)
        failing = [m for m in result.methods if result.failing[m]]
        self.info.setText(f"Sanity check, {result.mode}, {len(result.stages) - 1} stages in "
                          f"{result.milliseconds / 1000:.0f} s: " +
                          (f"{', '.join(failing)} barely change{'s' if len(failing) == 1 else ''} when the "
                           "weights are random." if failing
                           else "every method's map changes when the weights are random."))

    def _on_cancelled(self, key: str) -> None:
        if key not in self._running:
            return            # nothing of this panel's was running (a new image cancels just in case)
        self._running.discard(key)
        if key == "faithfulness" and not self.curves.results:
            self.info.setText(f"Cancelled: {self._computing}. Change a setting to compute again.")
        elif key == "sanity" and self._sanity is not None and self._sanity.result is None:
            self.sanity.clear("Cancelled: run the check again when you are ready.")
