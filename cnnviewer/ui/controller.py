"""What the user asks for (a model, weights, an image) turned into jobs and session changes.

Panels draw; the main window builds menus; this class is the one place that
loads things. Every load runs on the job thread, and a failure leaves the
session as it was, with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from cnnviewer.engine.session import Session
from cnnviewer.ui.jobs import UiJobs


@dataclass(frozen=True)
class NeedsTrust:
    """A weights file is a full pickled model; the user must trust it first."""

    path: str
    message: str


@dataclass(frozen=True)
class Loaded:
    """A loaded model and the spec that rebuilds its architecture (None: a whole-model file)."""

    model: Any
    spec: str | None


def _spec_after_weights(model, previous_name: str | None, previous_spec: str | None) -> str | None:
    """The architecture spec of a model that weights were just loaded into (job thread)."""
    if model.name == previous_name:
        return previous_spec
    from cnnviewer.engine.models import classification_models
    return model.name if model.name in classification_models() else None


class LazyWorkbench:
    """Creates the engine's Workbench on first use, on the job thread (torch imports there)."""

    def __init__(self) -> None:
        self._workbench: Any = None

    def __call__(self):
        if self._workbench is None:
            from cnnviewer.engine.workbench import Workbench
            self._workbench = Workbench()
        return self._workbench


class Controller(QObject):
    """Loads models, weights and images for the session, off the GUI thread."""

    forward_ready = Signal(object)    # ForwardSummary
    message = Signal(str)             # one line for the status bar
    model_loaded = Signal(object)     # LoadedModel
    trust_needed = Signal(str, str)   # path, message
    catalogue_ready = Signal(object)  # dict family -> list[(name, status)]

    def __init__(self, session: Session, jobs: UiJobs, *, device: str | None = None,
                 precision: str = "fp32") -> None:
        super().__init__()
        self.session, self.jobs = session, jobs
        self.workbench = LazyWorkbench()
        self.device, self.precision = device, precision
        self.summary = None
        self.model_spec: str | None = None   # what the current architecture was built from
        self.catalogue: dict[str, list[tuple[str, str]]] | None = None
        session.model_changed.connect(lambda _model: self.refresh_forward())
        session.image_changed.connect(lambda _image: self.refresh_forward())

    # ---------------------------------------------------------------- images
    def open_image(self, path: str | Path) -> None:
        """Load an image file and make it every panel's input."""
        path = str(path)

        def work(_context):
            from cnnviewer.engine.images import load_image
            return load_image(path)

        self.jobs.submit("image", work, on_done=self.session.set_image,
                         on_error=self.message.emit, label=f"Opening {Path(path).name}")

    def open_sample(self, name: str = "chelsea") -> None:
        """Load one of the bundled sample photos."""
        def work(_context):
            from cnnviewer.engine.images import sample_image
            return sample_image(name)

        self.jobs.submit("image", work, on_done=self.session.set_image, on_error=self.message.emit)

    # ---------------------------------------------------------------- models
    def load_model(self, spec: str, *, weights: str | None = None, trust: bool = False,
                   allow_download: bool = True) -> None:
        """Build a torchvision model (or FILE.py:NAME), then load `weights` into it if given."""
        device, precision = self.device, self.precision

        def work(context):
            from cnnviewer.engine.errors import UntrustedPickleError
            from cnnviewer.engine.loading import load_model, load_weights
            model = load_model(spec, device=device, precision=precision, allow_download=allow_download,
                               progress=context.report, cancel=context.cancel)
            if weights is None:
                return Loaded(model, spec)
            try:
                loaded = load_weights(weights, model, trust=trust, device=device, precision=precision)
            except UntrustedPickleError as error:
                return NeedsTrust(weights, str(error))
            return Loaded(loaded, _spec_after_weights(loaded, model.name, spec))

        self.jobs.submit("model", work, on_done=self._on_model_loaded,
                         on_error=lambda text: self.message.emit(f"Model not changed: {text}"),
                         label=f"Loading {spec}")

    def load_weights(self, path: str | Path, *, trust: bool = False) -> None:
        """Load a weights file into a model that fits it; on failure keep the current model."""
        path, current, device, precision = str(path), self.session.model, self.device, self.precision
        spec = self.model_spec

        def work(_context):
            from cnnviewer.engine.errors import UntrustedPickleError
            from cnnviewer.engine.loading import load_weights
            try:
                loaded = load_weights(path, current, trust=trust, device=device, precision=precision)
            except UntrustedPickleError as error:
                return NeedsTrust(path, str(error))
            return Loaded(loaded, _spec_after_weights(loaded, current.name if current else None, spec))

        self.jobs.submit("model", work, on_done=self._on_model_loaded,
                         on_error=lambda text: self.message.emit(f"Weights not loaded: {text}"),
                         label=f"Loading weights {Path(path).name}")

    def _on_model_loaded(self, result) -> None:
        if isinstance(result, NeedsTrust):
            self.trust_needed.emit(result.path, result.message)
            return
        self.summary = None
        model, self.model_spec = result.model, result.spec
        self.session.set_model(model)
        self.model_loaded.emit(model)
        self.message.emit(f"Loaded {model.title}: {model.weights_label}")

    def fetch_catalogue(self) -> None:
        """List torchvision's classification models with where their weights would come from."""
        def work(_context):
            from cnnviewer.engine.models import catalogue, catalogue_status
            return {family: [(name, catalogue_status(name)) for name in names]
                    for family, names in catalogue().items()}

        def done(result) -> None:
            self.catalogue = result
            self.catalogue_ready.emit(result)

        self.jobs.submit("catalogue", work, on_done=done, on_error=self.message.emit)

    # ---------------------------------------------------------------- forward
    def refresh_forward(self) -> None:
        """Run the recorded forward pass for the current model and image."""
        model, image, workbench = self.session.model, self.session.image, self.workbench
        if model is None or image is None:
            return

        def work(_context):
            return workbench().forward(model, image)

        self.jobs.submit("forward", work, on_done=self._on_forward_ready,
                         on_error=self.message.emit, label="Running the model")

    def _on_forward_ready(self, summary) -> None:
        self.summary = summary
        if self.session.selection.layer is None:
            from cnnviewer.engine.types import default_layer
            self.session.select(layer=default_layer(summary.layers))
        self.forward_ready.emit(summary)
