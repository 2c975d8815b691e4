"""Synthesis: make an image that a unit responds to, and watch it form.

The target is the shared selection (a class, a channel, a neuron; a layer alone is DeepDream's
objective). Run starts; the job thread runs a few steps at a time, so the image and the objective
plot refresh while the rest of the window keeps working; Stop takes effect within a step; after a
change of parameters, Continue goes on from the current image and Restart starts over. Save writes
the PNG and its recipe (JSON) for `cnnviewer synthesize --from`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.session import Session
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.synthesis.facet_strip import FacetStrip
from cnnviewer.ui.panels.synthesis.style_images import StyleImages
from cnnviewer.ui.panels.synthesis.settings import METHODS, SettingsForm
from cnnviewer.ui.panels.synthesis.runs import save_job, start_job
from cnnviewer.ui.panels.synthesis.saving import remember, suggested_path
from cnnviewer.ui.widgets.class_picker import ClassPicker
from cnnviewer.ui.widgets.history_plot import HistoryPlot
from cnnviewer.ui.widgets.image_canvas import ImageCanvas

SLICE_SECONDS = 0.2
STRETCHED = ("ascent", "facets")    # pixel-space results: shown with a contrast stretch (see views/stretch.py)


class SynthesisPanel(QWidget):
    """Gradient ascent (pixels or Fourier) and DeepDream for the session's model and selection."""

    def __init__(self, session: Session, jobs: UiJobs, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self.engine = None            # the run in progress (job thread objects: touched only in jobs)
        self.run_target: Target | None = None
        # The run's starting picture (DeepDream's image, style transfer's content) and its file, if
        # it has one; the style image's file: Save records them so --from can make the image again.
        self.start_picture: tuple[np.ndarray | None, str | None] = (None, None)
        self.style_file: str | None = None
        self.facet_values: list[float] = []     # each facet's objective, as the last slice left it
        self.method_of_run: str | None = None
        self.history: list[float] = []
        self.running = False
        self.method = QComboBox()
        for key, text in METHODS:
            self.method.addItem(text, key)
        self.method.setCurrentIndex(self.method.findData("fourier"))   # the one that makes recognisable images
        self.method.setToolTip("Pixel space with the natural-image regularizers, Fourier space with transforms, "
                               "multi-faceted from an indexed folder, DeepDream from the current input, or "
                               "style transfer of the current input")
        self.form = SettingsForm()
        self.style_images = StyleImages(jobs)       # style transfer's content and style pictures
        self.style_images.content.failed.connect(self._not_an_image)
        self.style_images.style.failed.connect(self._not_an_image)
        self.style_images.style.changed.connect(self._on_style_changed)
        # Whether Run aims at the session's class or at its selected unit: whichever was chosen last
        # (a class in Gradients, a prediction bar, a logit cell or the picker here; a channel anywhere).
        self.aim_class = True
        self._seen = session.selection
        self.class_picker = ClassPicker()
        self.class_picker.setToolTip("The class to make an image of (type to search); chosen in Gradients, "
                                     "a prediction bar or a logit cell of Feature maps, it shows here too")
        self.class_picker.chosen.connect(self._on_class_chosen)
        self.method.currentIndexChanged.connect(lambda _i: self._on_method())
        self.target_label = QLabel("")
        self.target_label.setWordWrap(True)
        self.run_button = QPushButton("Run")
        self.stop_button = QPushButton("Stop")
        self.restart_button = QPushButton("Restart")
        self.save_button = QPushButton("Save…")
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.restart_button.clicked.connect(self.restart)
        self.save_button.clicked.connect(self._on_save)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.canvas = ImageCanvas(self)
        self.examples = FacetStrip()           # facets: each cluster's most central images, under its facet
        self.examples.setVisible(False)
        self.dataset_index = lambda: None      # the main window points this at the Dataset panel's index
        self.plot = HistoryPlot()
        self.curve = self.plot.curve
        buttons = QHBoxLayout()
        for widget in (QLabel("Method"), self.method, self.run_button, self.stop_button, self.restart_button,
                       self.save_button):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        aim = QHBoxLayout()
        self.class_label = QLabel("Class")
        aim.addWidget(self.class_label)
        aim.addWidget(self.class_picker, 1)
        aim.addWidget(self.target_label, 2)
        side = QWidget()
        column = QVBoxLayout(side)
        column.setContentsMargins(0, 0, 0, 0)
        self.scroller = scroller = QScrollArea()   # the form scrolls: the panel never makes the window taller
        scroller.setWidget(self.form)
        scroller.setWidgetResizable(True)
        scroller.setFrameShape(QScrollArea.Shape.NoFrame)
        scroller.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)   # labels and values seen together
        side.setMinimumWidth(self.form.minimumSizeHint().width() + 24)
        column.addWidget(scroller, 2)
        column.addWidget(self.plot, 1)
        pictures = QWidget()
        stack = QVBoxLayout(pictures)
        stack.setContentsMargins(0, 0, 0, 0)
        stack.addWidget(self.style_images)
        stack.addWidget(self.canvas, 1)
        stack.addWidget(self.examples)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(pictures)
        split.addWidget(side)
        split.setSizes([520, 360])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(buttons)
        layout.addLayout(aim)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(split, 1)
        session.selection_changed.connect(self._on_selection_changed)
        session.model_changed.connect(self._on_model_changed)
        session.forward_changed.connect(lambda _summary: self._show_target())   # "the top-1" is known now
        session.image_changed.connect(lambda image: self.style_images.content.show_fallback(
            None if image is None else np.asarray(image.pixels), f"current input: {image.name}" if image else ""))
        self._on_method()
        self._show_buttons()

    def _on_method(self) -> None:
        method = self.method.currentData()
        if self.method_of_run is not None and method != self.method_of_run:
            self._forget()      # another method's image, curve or Continue would mislead
        self.form.show_method(method)
        self.class_picker.setVisible(method != "style")
        self.class_label.setVisible(method != "style")
        self.scroller.verticalScrollBar().setValue(0)      # the first fields (preset, steps) in view
        self.style_images.setVisible(method == "style")
        self.plot.set_label("loss" if method == "style" else "objective")
        self._show_target()

    def _on_style_changed(self) -> None:
        if "needs a style image" in self.status.text():
            self.status.setText("Style image ready: Run.")

    def _on_model_changed(self, model) -> None:
        self.class_picker.set_classes(model.categories)
        self._forget()

    def _on_class_chosen(self, index: int) -> None:
        self.aim_class = True
        self._session.select(class_index=index)
        self._show_target()

    def _on_selection_changed(self, selection) -> None:
        seen, self._seen = self._seen, selection
        if selection.class_index != seen.class_index and selection.class_index is not None:
            self.aim_class = True
        elif (selection.channel, selection.neuron) != (seen.channel, seen.neuron) or selection.layer != seen.layer:
            self.aim_class = selection.channel is None
        self.class_picker.show_class(selection.class_index)
        self._show_target()

    def _not_an_image(self, text: str) -> None:
        self.status.setText(f"Not used: {text}. The previous picture stays.")

    # ---------------------------------------------------------------- target
    def target(self) -> Target | None:
        """What the selection asks to maximise (None: nothing usable is selected)."""
        selection, method = self._session.selection, self.method.currentData()
        if method == "deepdream":
            if selection.layer is None:
                return None
            if selection.channel is None or self.aim_class:
                return Target(layer=selection.layer)
        if selection.layer is None or selection.channel is None or self.aim_class:
            if selection.class_index is not None:
                return Target(class_index=selection.class_index)
            forward = self._session.forward
            top = getattr(forward, "predictions", None) if forward is not None else None
            return Target(class_index=top[0].index) if top else Target(class_index=0)
        return Target(layer=selection.layer, channel=selection.channel, neuron=selection.neuron)

    def _describe(self, target: Target) -> str:
        model = self._session.model
        if target.layer is None:
            return f"class {target.class_index}" + (f" ({model.label(target.class_index)})" if model else "")
        if target.channel is None:
            return f"all of {target.layer} (its mean squared activation)"
        return target.describe()

    def _show_target(self) -> None:
        if self.method.currentData() == "style":
            self.target_label.setText("Style transfer: the content picture (the current input unless another is "
                                      "dropped) painted with the style picture's textures. " +
                                      self.style_images.backbone_note(self._show_target))
            return
        target = self.target()
        top = target is not None and target.layer is None and self._session.selection.class_index is None
        self.target_label.setText("Target: select a layer (DeepDream excites a whole layer)" if target is None
                                  else f"Target: <b>{self._describe(target)}</b>" + (" (the top-1)" if top else ""))

    # ---------------------------------------------------------------- running
    def run(self) -> None:
        """Run, or Continue the current run with the settings as they are now."""
        if self.engine is not None and self.method_of_run == self.method.currentData():
            self._continue()
        else:
            self.restart()

    def _style_inputs(self) -> tuple[np.ndarray, np.ndarray, str | None, str | None] | None:
        """Content and style pixels and their files (None, with a message, if one is missing)."""
        found = self.style_images.inputs(self._session.image)
        if isinstance(found, str):
            self.status.setText(found)
            return None
        return found

    def restart(self) -> None:
        model, target, method = self._session.model, self.target(), self.method.currentData()
        style_inputs = self._style_inputs() if method == "style" and model is not None else None
        if method == "style":
            if style_inputs is None:
                return
            target = None
        elif model is None or target is None:
            self.status.setText("Choose a model and a target first.")
            return
        image = self._session.image
        if method == "deepdream" and image is None:
            self.status.setText("DeepDream starts from the current input: open an image first.")
            return
        settings = self.form.settings(method, model.preprocess.crop_size)
        pixels = None if image is None else np.asarray(image.pixels)
        index = self.dataset_index() if method == "facets" else None
        if method == "facets" and index is None:
            self.status.setText("Multi-faceted ascent clusters the unit's top images: index a folder in the "
                                "Dataset panel first.")
            return
        extras = {name: spin.value() for name, spin in self.form.extras.items()}

        start = start_job(method, model, target, settings, pixels, style_inputs, index, extras)

        self._jobs.cancel("synthesis")
        self.engine, self.run_target, self.method_of_run, self.history = None, target, method, []
        self.facet_values = []
        if style_inputs:
            self.start_picture, self.style_file = (style_inputs[0], style_inputs[2]), style_inputs[3]
        else:
            source = image.source if image is not None and Path(image.source).is_file() else None
            self.start_picture, self.style_file = (pixels, source), None
        self.plot.clear_history()
        self.progress.setValue(0)
        self.examples.clear()
        self.status.setText(f"Starting {self.method.currentText().lower()}" +
                            (f" of {self._describe(target)}…" if target is not None else "…"))
        self.running = True
        self._show_buttons()
        self._jobs.submit("synthesis_start", start, on_done=self._started, on_error=self._failed)

    def _started(self, result) -> None:
        self.engine, examples = result
        if examples is not None:
            self.examples.show_facets(examples)
        self._slice()

    def _continue(self) -> None:
        from dataclasses import replace
        settings = self.form.settings(self.method_of_run, self._session.model.preprocess.crop_size)
        engine = self.engine
        keep = {"size": engine.settings.size} if hasattr(engine.settings, "size") else {}
        new = replace(settings, **keep, seed=engine.settings.seed)

        def update(_context):
            if hasattr(engine, "retune"):      # style transfer: keeps its layers, rebuilds its optimizer if asked
                engine.retune(new)
                return engine, None
            engine.settings = new
            optimizer = getattr(engine, "optimizer", None)
            if optimizer is not None:
                for group in optimizer.param_groups:
                    group["lr"] = new.lr
            return engine, None

        self.running = True
        self._show_buttons()
        self._jobs.submit("synthesis_start", update, on_done=self._started, on_error=self._failed)

    def _slice(self) -> None:
        engine, stretched = self.engine, self.method_of_run in STRETCHED

        def work(context):
            from cnnviewer.engine.runtime.modes import torch_threads
            from cnnviewer.engine.synthesis.recipe import total_steps
            deadline = time.perf_counter() + SLICE_SECONDS
            total = total_steps(engine)
            with torch_threads(getattr(engine, "threads", None)):     # facets' batch: every core
                while engine.step < total and time.perf_counter() < deadline:
                    engine.run(1, context.cancel)
            pictures = engine.pictures()            # facets side by side, in their order
            if stretched:                           # display only: Save writes the run's own pixels
                from cnnviewer.engine.views.stretch import stretch
                pictures = [stretch(picture) for picture in pictures]
            return (engine.step, total, [float(h.min()) for h in engine.history],
                    np.concatenate(list(pictures), axis=1), [float(v) for v in engine.objective()])

        self._jobs.submit("synthesis", work, on_done=self._on_slice, on_error=self._failed)

    def _on_slice(self, result) -> None:
        step, total, history, picture, reached = result
        self.history = history
        self.canvas.show_image(picture, keep_view=True)
        self.plot.show_history(history, total)
        self.progress.setValue(int(1000 * step / max(total, 1)))
        value = history[-1] if history else float("nan")
        what = "loss" if self.method_of_run == "style" else "objective"
        if len(reached) > 1:       # facets, left to right: each one's activation reached
            what, value = "lowest objective", min(reached)
            self.facet_values = reached
            self.examples.show_values(reached)
        self.status.setText(f"Step {step}/{total}: {what} {value:.4g}" + self._facet_text())
        if step < total and self.running:
            self._slice()
        else:
            self.running = False
            self._show_buttons()
            if step >= total:
                self.status.setText(f"Done: {step} steps, {what} {value:.4g}{self._facet_text()}. Change "
                                    "settings and Continue (more steps), or Restart.")

    def _facet_text(self) -> str:
        if self.method_of_run != "facets" or not self.facet_values:
            return ""
        return " (facets left to right: " + ", ".join(f"{v:.3g}" for v in self.facet_values) + ")"

    def stop(self) -> None:
        """Stop within a step; the image so far stays, and Continue goes on from it."""
        self.running = False
        self._jobs.cancel("synthesis")
        self._show_buttons()
        self.status.setText(f"Stopped at step {len(self.history)}. Continue goes on from this image.")

    def _failed(self, text: str) -> None:
        self.running = False
        self._show_buttons()
        self.status.setText(f"Stopped: {text}")

    def _forget(self) -> None:
        if self.engine is not None or self.running:   # a run for the previous model: stop it
            self._jobs.cancel("synthesis")
        self.engine, self.running, self.history, self.method_of_run = None, False, [], None
        self.examples.clear()
        self.canvas.clear()
        self.plot.clear_history()
        self.progress.setValue(0)
        self.status.setText("")
        self._show_buttons()
        self._show_target()

    def _show_buttons(self) -> None:
        same = self.engine is not None and self.method_of_run == self.method.currentData()
        self.run_button.setText("Continue" if same and not self.running else "Run")
        self.run_button.setEnabled(not self.running)
        self.stop_button.setEnabled(self.running)
        self.restart_button.setEnabled(self.engine is not None and not self.running)
        self.save_button.setEnabled(self.engine is not None and not self.running)

    # ---------------------------------------------------------------- saving
    def _on_save(self) -> None:
        model = self._session.model
        start = suggested_path(self.method_of_run, self.run_target, model.label if model is not None else None)
        path, _ = QFileDialog.getSaveFileName(self, "Save synthesized image", start, "PNG (*.png)")
        if path:
            remember(path)
            self.save(path)

    def save(self, path: str) -> None:
        """The PNG (the run's own pixels, not the display stretch) and its recipe (JSON beside it)."""
        self._jobs.submit("synthesis_save", save_job(path, self), on_done=lambda json_path: self.status.setText(
            f"Saved {path} and {json_path}"), on_error=self.status.setText)
