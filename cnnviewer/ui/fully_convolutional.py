"""The "Fully convolutional" toggle: every panel switches to the classifier run as a class map
(engine.segmentation.fully_convolutional_model, built on the job thread) and back, keeping the image.

A model that does not qualify keeps the session as it was and says why in one line. Knock-outs are
cleared when switching either way: they were made on the other network's layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

if TYPE_CHECKING:
    from cnnviewer.ui.controller import Controller

JOB = "fully-convolutional"


class FullyConvolutionalToggle(QObject):
    """On: the session's model is the class-map version of `classifier`; off: a model as loaded."""

    changed = Signal(bool)    # ticked or not: after a switch, a refusal, or another model loaded

    def __init__(self, controller: Controller) -> None:
        super().__init__(controller)
        self._controller = controller
        self.classifier = None   # the LoadedModel to go back to while on
        self._switching = False
        self._wanted = False     # the latest tick: a switch still building when unticked is dropped
        controller.model_loaded.connect(self._on_model_loaded)

    @property
    def on(self) -> bool:
        """The session shows a fully convolutional model made by this toggle."""
        return self.classifier is not None

    def set_on(self, on: bool) -> None:
        """Tick or untick (the menu action and the Input panel's checkbox both call this)."""
        self._wanted = on
        if on == self.on:
            self.changed.emit(self.on)
        elif on:
            self._switch_on()
        else:
            self._switch_off()

    def _switch_on(self) -> None:
        controller = self._controller
        model = controller.session.model
        if model is None:
            controller.message.emit("Fully convolutional: no model loaded yet")
            self.changed.emit(False)
            return
        classifier, dropped = model.original, len(model.interventions)

        def work(_context):
            from cnnviewer.engine.runtime.inference import check_runs
            from cnnviewer.engine.segmentation.fully_convolutional import fully_convolutional_model
            made = fully_convolutional_model(classifier)
            check_runs(made)
            return made

        def done(made) -> None:
            if controller.session.model is not model or not self._wanted:   # another model, or unticked
                self.changed.emit(self.on)
                return
            self.classifier = classifier
            side = made.preprocess.crop_size
            cleared = f"; {dropped} knock-out{'s' * (dropped != 1)} cleared" if dropped else ""
            self._show(made, f"Fully convolutional: {classifier.name}'s head at every position of a "
                             f"{side}-px square{cleared}")

        def failed(text: str) -> None:
            controller.message.emit(f"Not fully convolutional: {text}")
            self.changed.emit(self.on)

        controller.jobs.submit(JOB, work, on_done=done, on_error=failed,
                               label=f"Making {classifier.name} fully convolutional")

    def _switch_off(self) -> None:
        controller, classifier = self._controller, self.classifier
        dropped = len(controller.session.interventions)
        self.classifier = None
        cleared = f"; {dropped} knock-out{'s' * (dropped != 1)} cleared" if dropped else ""
        self._show(classifier, f"Back to the classifier {classifier.name}{cleared}")

    def _show(self, model, text: str) -> None:
        """Every panel takes up `model` (as a load would); the status bar says `text`."""
        controller = self._controller
        self._switching = True
        try:
            with controller.jobs.held():
                controller.session.set_model(model)
                controller.model_loaded.emit(model)
                controller.interventions_changed.emit(())
        finally:
            self._switching = False
        controller.message.emit(text)
        self.changed.emit(self.on)

    def _on_model_loaded(self, _model) -> None:
        """Another model or weights were loaded: the toggle is off (that model is as loaded)."""
        if self._switching:
            return
        self._wanted = False
        if self.classifier is not None:
            self.classifier = None
            self.changed.emit(False)
