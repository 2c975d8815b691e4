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
from cnnviewer.ui import file_dialogs
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.dataset.widgets import PictureGrid
from cnnviewer.ui.panels.synthesis.style_images import StyleImages
from cnnviewer.ui.panels.synthesis.settings import METHODS, SettingsForm
from cnnviewer.ui.widgets.history_plot import HistoryPlot
from cnnviewer.ui.widgets.image_canvas import ImageCanvas

SLICE_SECONDS = 0.2


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
        self.method.setToolTip("Pixel space with the natural-image regularizers, Fourier space with transforms, "
                               "multi-faceted from an indexed folder, DeepDream from the current input, or "
                               "style transfer of the current input")
        self.form = SettingsForm()
        self.style_images = StyleImages(jobs)       # style transfer's content and style pictures
        self.style_images.content.failed.connect(self._not_an_image)
        self.style_images.style.failed.connect(self._not_an_image)
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
        self.examples = PictureGrid(64)        # facets: each cluster's most central images
        self.examples.setToolTip("Each facet's cluster: the images nearest its centre (its start is their mean)")
        self.examples.setMaximumHeight(110)
        self.examples.setVisible(False)
        self.dataset_index = lambda: None      # the main window points this at the Dataset panel's index
        self.plot = HistoryPlot()
        self.curve = self.plot.curve
        buttons = QHBoxLayout()
        for widget in (QLabel("Method"), self.method, self.run_button, self.stop_button, self.restart_button,
                       self.save_button):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        side = QWidget()
        column = QVBoxLayout(side)
        column.setContentsMargins(0, 0, 0, 0)
        scroller = QScrollArea()          # the form scrolls: the panel never makes the window taller
        scroller.setWidget(self.form)
        scroller.setWidgetResizable(True)
        scroller.setFrameShape(QScrollArea.Shape.NoFrame)
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
        layout.addWidget(self.target_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(split, 1)
        session.selection_changed.connect(lambda _s: self._show_target())
        session.model_changed.connect(lambda _m: self._forget())
        session.image_changed.connect(lambda image: self.style_images.content.show_fallback(
            None if image is None else np.asarray(image.pixels), f"current input: {image.name}" if image else ""))
        self._on_method()
        self._show_buttons()

    def _on_method(self) -> None:
        method = self.method.currentData()
        self.form.show_method(method)
        self.style_images.setVisible(method == "style")
        self.plot.set_label("loss" if method == "style" else "objective")
        self._show_target()

    def _not_an_image(self, text: str) -> None:
        self.status.setText(f"Not used: {text}. The previous picture stays.")

    # ---------------------------------------------------------------- target
    def target(self) -> Target | None:
        """What the selection asks to maximise (None: nothing usable is selected)."""
        selection, method = self._session.selection, self.method.currentData()
        if selection.layer is None:
            if selection.class_index is not None:
                return Target(class_index=selection.class_index)
            forward = self._session.forward
            top = getattr(forward, "predictions", None) if forward is not None else None
            return Target(class_index=top[0].index) if top else Target(class_index=0)
        if selection.channel is None:
            return Target(layer=selection.layer) if method == "deepdream" else None
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
                                      "dropped) painted with the style picture's textures")
            return
        target = self.target()
        self.target_label.setText("Target: select a channel of the layer (or choose DeepDream for the whole layer)"
                                  if target is None else f"Target: <b>{self._describe(target)}</b>")

    # ---------------------------------------------------------------- running
    def run(self) -> None:
        """Run, or Continue the current run with the settings as they are now."""
        if self.engine is not None and self.method_of_run == self.method.currentData():
            self._continue()
        else:
            self.restart()

    def _style_inputs(self) -> tuple[np.ndarray, np.ndarray, str | None, str | None] | None:
        """Content and style pixels and their files (None, with a message, if one is missing)."""
        content, style, image = self.style_images.content, self.style_images.style, self._session.image
        if style.pixels is None:
            self.status.setText("Style transfer needs a style image: drop one on the Style box, or Choose….")
            return None
        if content.pixels is None and image is None:
            self.status.setText("Style transfer needs a content image: open an image, or drop one on Content.")
            return None
        if content.pixels is not None:
            return content.pixels, style.pixels, content.path, style.path
        source = image.source if Path(image.source).is_file() else None
        return np.asarray(image.pixels), style.pixels, source, style.path

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

        def start(_context):
            if method == "facets":
                from cnnviewer.engine.synthesis.facets import facet_ascent, find_facets
                found = find_facets(index, model, target, facets=extras["facets"], top=extras["top"],
                                    nearest=extras["nearest"], seed=settings.seed)
                examples = [(facet, index.thumbnails(members[:4]), [index.path(r).name for r in members[:4]])
                            for facet, members in enumerate(found.members)]
                return facet_ascent(model, target, found, settings), examples
            from cnnviewer.engine.synthesis.recipe import make_engine
            if method == "style":
                return make_engine(method, model, None, settings, style_inputs[0], style_inputs[1]), []
            return make_engine(method, model, target, settings, pixels), []

        self._jobs.cancel("synthesis")
        self.engine, self.run_target, self.method_of_run, self.history = None, target, method, []
        self.facet_values = []
        if style_inputs:
            self.start_picture, self.style_file = (style_inputs[0], style_inputs[2]), style_inputs[3]
        else:
            source = image.source if image is not None and Path(image.source).is_file() else None
            self.start_picture, self.style_file = (pixels, source), None
        self.plot.clear_history()
        self.status.setText(f"Starting {self.method.currentText().lower()}" +
                            (f" of {self._describe(target)}…" if target is not None else "…"))
        self.running = True
        self._show_buttons()
        self._jobs.submit("synthesis_start", start, on_done=self._started, on_error=self._failed)

    def _started(self, result) -> None:
        self.engine, examples = result
        if examples is not None:
            self.examples.show_pictures([(facet * 100 + i, thumb, f"facet {facet + 1}", name)
                                         for facet, thumbs, names in examples
                                         for i, (thumb, name) in enumerate(zip(thumbs, names))])
            self.examples.setVisible(bool(examples))
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
        engine = self.engine

        def work(context):
            from cnnviewer.engine.runtime.modes import torch_threads
            from cnnviewer.engine.synthesis.recipe import total_steps
            deadline = time.perf_counter() + SLICE_SECONDS
            total = total_steps(engine)
            with torch_threads(getattr(engine, "threads", None)):     # facets' batch: every core
                while engine.step < total and time.perf_counter() < deadline:
                    engine.run(1, context.cancel)
            pictures = engine.pictures()            # facets side by side, in their order
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
        self.engine, self.running, self.history = None, False, []
        self.canvas.clear()
        self.plot.clear_history()
        self.progress.setValue(0)
        self.status.setText("")
        self._show_buttons()
        self._show_target()

    def _show_buttons(self) -> None:
        self.run_button.setText("Continue" if self.engine is not None and not self.running else "Run")
        self.run_button.setEnabled(not self.running)
        self.stop_button.setEnabled(self.running)
        self.restart_button.setEnabled(self.engine is not None and not self.running)
        self.save_button.setEnabled(self.engine is not None and not self.running)

    # ---------------------------------------------------------------- saving
    def _on_save(self) -> None:
        path = file_dialogs.save_file(self, "Save synthesized image", "synthesis.png", "PNG (*.png)")
        if path:
            self.save(path)

    def save(self, path: str) -> None:
        """The PNG and its recipe (JSON beside it)."""
        engine, model, target, method = self.engine, self._session.model, self.run_target, self.method_of_run
        start, source = self.start_picture if method in ("deepdream", "style") else (None, None)
        style_path = self.style_file

        index = self.dataset_index() if method == "facets" else None
        extras = {name: spin.value() for name, spin in self.form.extras.items()}

        def work(_context):
            from cnnviewer.engine.dataset.index import weights_digest
            from cnnviewer.engine.synthesis.recipe import record, save
            nonlocal source
            if start is not None and source is None:    # a sample or camera frame: kept beside the result
                from PIL import Image
                source = str(Path(path).with_suffix(".start.png"))
                Image.fromarray(np.ascontiguousarray(start[..., :3])).save(source)
            recipe = record(method, target, engine.settings, model, weights_digest(model), engine, source, style_path)
            if index is not None:     # what `cnnviewer synthesize --from` needs to find the same facets
                recipe.update(folder=str(index.folder), **extras, objectives=[float(v) for v in engine.objective()])
            return str(save(path, np.concatenate(list(engine.pictures()), axis=1), recipe))

        self._jobs.submit("synthesis_save", work, on_done=lambda json_path: self.status.setText(
            f"Saved {path} and {json_path}"), on_error=self.status.setText)
