"""What the user asks for (a model, weights, an image) turned into jobs and session changes.

Panels draw; the main window builds menus; this class is the one place that
loads things. Every load runs on the job thread, and a failure leaves the
session as it was, with a one-line message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from cnnviewer.engine.session import Session
from cnnviewer.engine.types import DEFAULT_MODEL
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.load_results import LazyWorkbench, Loaded, NeedsTrust, spec_after_weights

if TYPE_CHECKING:
    from cnnviewer.engine.experiments.ablate_spec import Knockout


class Controller(QObject):
    """Loads models, weights and images for the session, off the GUI thread."""

    message = Signal(str)             # one line for the status bar
    model_loaded = Signal(object)     # LoadedModel
    trust_needed = Signal(str, str)   # path, message
    catalogue_ready = Signal(object)  # dict family -> list[(name, status)]
    image_opened = Signal(str)        # path of an image file that loaded
    interventions_changed = Signal(object)   # tuple of Knockout: the current model's knock-outs
    dataset_folder_changed = Signal(object)  # Path: the folder the Dataset panel opened (Experiments use it)

    def __init__(self, session: Session, jobs: UiJobs, *, device: str | None = None,
                 precision: str = "fp32") -> None:
        super().__init__()
        self.session, self.jobs = session, jobs
        self.workbench = LazyWorkbench()
        self.device, self.precision = device, precision
        self._pending: dict[str, Any] | None = None   # the model load in flight: spec, labels, ...
        self.model_spec: str | None = None   # what the current architecture was built from
        self.catalogue: dict[str, list[tuple[str, str]]] | None = None
        # The Dataset panel's index, when it has one (for knock-outs by a folder's mean); set by it.
        self.dataset_index: Callable[[], Any] = lambda: None
        self.dataset_folder: Path | None = None
        self._wanted: tuple | None = None    # the knock-outs being built (Knockout or a measuring function)
        jobs.cancelled.connect(self._on_job_cancelled)
        session.model_changed.connect(lambda _model: self.refresh_forward())
        session.image_changed.connect(lambda _image: self.refresh_forward())
        from cnnviewer.ui.fully_convolutional import FullyConvolutionalToggle
        self.fully_convolutional = FullyConvolutionalToggle(self)   # File > Fully convolutional

    # ---------------------------------------------------------------- images
    def open_image(self, path: str | Path) -> None:
        """Load an image file and make it every panel's input; remembered once it loaded."""
        path = str(path)

        def work(_context):
            from cnnviewer.engine.media.images import load_image
            return load_image(path)

        def done(image) -> None:
            self.session.set_image(image)
            self.image_opened.emit(path)

        self.jobs.submit("image", work, on_done=done, on_error=self.message.emit,
                         label=f"Opening {Path(path).name}", detach_on_cancel=True)

    def open_sample(self, name: str = "chelsea") -> None:
        """Load one of the bundled sample photos."""
        def work(_context):
            from cnnviewer.engine.media.images import sample_image
            return sample_image(name)

        self.jobs.submit("image", work, on_done=self.session.set_image, on_error=self.message.emit)

    # ---------------------------------------------------------------- models
    def load_model(self, spec: str, *, weights: str | None = None, trust: bool = False,
                   labels: str | None = None, allow_download: bool = True) -> None:
        """Build a torchvision model (or FILE.py:NAME), then load `weights` into it if given.

        Weights that fail leave the new architecture loaded, with a message. If
        the architecture fails while no model is shown yet (at launch), the
        default model is loaded instead, so the window is never left empty.
        """
        device, precision = self.device, self.precision
        self._pending = {"spec": spec, "labels": labels, "allow_download": allow_download}

        def work(context):
            from cnnviewer.engine.errors import (
                ModelError,
                UntrustedPickleError,
                WeightsError,
            )
            from cnnviewer.engine.models.loading import (
                load_model,
                load_weights,
                read_labels,
            )
            from cnnviewer.engine.runtime.inference import check_runs
            names = read_labels(labels) if labels else None
            model = load_model(spec, device=device, precision=precision, allow_download=allow_download,
                               progress=context.report, cancel=context.cancel)
            check_runs(model)
            if names is not None:
                model = dataclasses.replace(model, categories=names)
            if weights is None:
                return Loaded(model, spec)
            try:
                loaded = load_weights(weights, model, trust=trust, labels=names, device=device,
                                      precision=precision)
                check_runs(loaded)
            except UntrustedPickleError as error:
                return Loaded(model, spec, needs_trust=NeedsTrust(weights, str(error)))
            except (WeightsError, ModelError) as error:   # unreadable, or weights that cannot run
                return Loaded(model, spec, note=f"Weights not loaded: {error}")
            note = (f"{Path(weights).name} holds {loaded.name} weights, not {model.name}: loaded {loaded.name}"
                    if loaded.name != model.name else "")
            return Loaded(loaded, spec_after_weights(loaded, model.name, spec), note=note)

        def failed(text: str) -> None:
            self._pending = None
            if self.session.model is None and spec != DEFAULT_MODEL:
                self.message.emit(f"Could not load {spec}: {text}. Showing {DEFAULT_MODEL} instead.")
                self.load_model(DEFAULT_MODEL)
            else:
                self.message.emit(f"Model not changed: {text}")

        self.jobs.submit("model", work, on_done=self._on_model_loaded, on_error=failed,
                         label=f"Loading {spec}", detach_on_cancel=True)

    def load_weights(self, path: str | Path, *, trust: bool = False) -> None:
        """Load a weights file into a model that fits it; on failure keep the current model.

        While a model is still loading, the weights go to that model (not the
        one on screen), so choosing a model then dropping weights does both.
        """
        if self._pending is not None:
            self.load_model(**self._pending, weights=str(path), trust=trust)
            return
        current = self.session.model.original if self.session.model is not None else None   # not the knocked copy
        current = self.fully_convolutional.classifier or current    # nor the fully convolutional one
        path, device, precision = str(path), self.device, self.precision
        spec = self.model_spec

        def work(_context):
            from cnnviewer.engine.errors import UntrustedPickleError
            from cnnviewer.engine.models.loading import load_weights
            from cnnviewer.engine.runtime.inference import check_runs
            try:
                loaded = load_weights(path, current, trust=trust, device=device, precision=precision)
            except UntrustedPickleError as error:
                return NeedsTrust(path, str(error))
            check_runs(loaded)
            return Loaded(loaded, spec_after_weights(loaded, current.name if current else None, spec))

        self.jobs.submit("model", work, on_done=self._on_model_loaded,
                         on_error=lambda text: self.message.emit(
                             f"{'Model not changed' if path.lower().endswith('.onnx') else 'Weights not loaded'}: {text}"),
                         label=f"Loading weights {Path(path).name}", detach_on_cancel=True)

    def adopt_module(self, module: Any, *, name: str, labels: Sequence[str] | None = None, preprocess: Any = None,
                     live: bool = False, on_done: Callable[[Any], None] | None = None,
                     on_error: Callable[[str], None] | None = None) -> None:
        """Show an nn.Module from a Python session (`cnnviewer.show`), copied (or, `live`, sharing its
        weights) on the job thread: the caller's module stays as found (python_api.adopt). No spec, so
        the next launch never tries to rebuild it. `on_done(model)` / `on_error(line)` follow."""
        def work(_context):
            from cnnviewer.python_api.adopt import adopt_checked
            return Loaded(adopt_checked(module, name=name, labels=labels, preprocess=preprocess, live=live), None)

        def done(result: Loaded) -> None:
            self._on_model_loaded(result)
            if on_done is not None:
                on_done(result.model)

        def failed(text: str) -> None:
            self.message.emit(f"Model not changed: {text}")
            if on_error is not None:
                on_error(text)

        self.jobs.submit("model", work, on_done=done, on_error=failed, label=f"Loading {name}", detach_on_cancel=True)

    def _on_job_cancelled(self, key: str) -> None:
        if key == "model":   # a cancelled load is no longer where dropped weights should go
            self._pending = None
        if key == "knockout":
            self._wanted = None

    def _on_model_loaded(self, result) -> None:
        self._pending = None
        if isinstance(result, NeedsTrust):
            self.trust_needed.emit(result.path, result.message)
            return
        model, self.model_spec = result.model, result.spec
        with self.jobs.held():          # every panel's first job starts once all have been told
            self.session.set_model(model)
            self.model_loaded.emit(model)
            self.interventions_changed.emit(())     # another model: no knock-outs
        if self._wanted is not None:       # nor any being built for the old one
            self.jobs.cancel("knockout")
        weights = model.weights_label if model.trained else "no weights offline: untrained"   # short, not the raw error
        self.message.emit(result.note or f"Loaded {model.name}: {weights}")
        if result.needs_trust is not None:
            self.trust_needed.emit(result.needs_trust.path, result.needs_trust.message)

    def show_model_on(self, model, image, note: str) -> None:
        """Switch every panel to a model built elsewhere (a detection's explainer) and its image.

        The loaded model's spec is kept, so the next launch still opens it.
        """
        with self.jobs.held():
            self.session.set_image(image)
            self.session.set_model(model)
            self.model_loaded.emit(model)
            self.interventions_changed.emit(tuple(model.interventions))
        self.message.emit(note)

    def fetch_catalogue(self) -> None:
        """List torchvision's classification models with where their weights would come from."""
        def work(_context):
            from cnnviewer.engine.models.catalogue import catalogue, catalogue_status
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
            summary = workbench().forward(model, image)
            if model.intact is None:
                return summary, None
            from cnnviewer.engine.experiments.knockout import intervention_effect
            return summary, intervention_effect(model, image, summary.predictions)

        self.jobs.submit("forward", work, on_done=self._on_forward_ready,
                         on_error=self._on_forward_failed, label="Running the model", first=True)

    def _on_forward_failed(self, text: str) -> None:
        self.message.emit(text)
        self.session.fail_forward(text)

    def _on_forward_ready(self, result) -> None:
        summary, effect = result
        if self.session.selection.layer is None:
            from cnnviewer.engine.types import default_layer
            self.session.select(layer=default_layer(summary.layers))
        self.session.set_forward(summary, effect)

    # ---------------------------------------------------------------- knock-outs
    @property
    def interventions(self) -> tuple[Knockout, ...]:
        """The knock-outs of the model every panel shows, in the order they were added."""
        return self.session.interventions

    def _wanted_base(self) -> tuple:
        """The knock-outs a new request adds to: those being built, else those shown. Two quick
        requests therefore both land; each build replaces the one in flight (one job key)."""
        return self._wanted if self._wanted is not None else self.interventions

    def add_knockout(self, knockout: Knockout) -> None:
        """Every panel recomputes with `knockout` added to the current ones (built on the job thread)."""
        self._set_interventions((*self._wanted_base(), knockout))

    def remove_knockout(self, i: int) -> None:
        """Drop the i-th knock-out (as the strip lists them)."""
        current = list(self._wanted_base())
        if 0 <= i < len(current):
            del current[i]
            self._set_interventions(tuple(current))

    def clear_interventions(self) -> None:
        """Back to the intact model, keeping the selection, the class and the image."""
        self._set_interventions(())

    def request_knockout(self, layer: str, channels: Sequence[int] | None, mode: str = "zero",
                         factor: float = 0.0, over: str = "image") -> None:
        """Knock out `channels` of `layer` (None: all of them, counted on the job thread); 'mean' is
        measured there first: over this image (the intact model's activations, as `--ablate` does, so
        the same knock-outs give the same numbers in any order) or, `over='folder'`,
        over the Dataset panel's index."""
        model, image, index = self.session.model, self.session.image, self.dataset_index()
        if model is None:
            return
        if mode == "mean" and over == "folder" and index is None:
            self.message.emit("Knock-out not applied: no indexed folder (open one in the Dataset panel), "
                              "or use the mean over this image")
            return
        if mode == "mean" and image is None:
            self.message.emit("Knock-out not applied: the mean over this image needs an image; open one first")
            return
        chosen = None if channels is None else tuple(dict.fromkeys(int(c) for c in channels))

        def make(_context):
            from cnnviewer.engine.experiments import knockout as ko
            picked = chosen if chosen is not None else tuple(range(ko.layer_channels(model, layer)))
            if mode != "mean":
                return ko.Knockout(layer, picked, mode, factor=factor)
            if over == "folder":
                values, source = ko.folder_channel_means(index, layer, picked)
            else:
                from cnnviewer.engine.runtime.inference import prepare_input
                inputs = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels)
                values, source = ko.channel_means(model.original, inputs.tensor, layer, picked), "this image"
            return ko.Knockout(layer, picked, "mean", means=values, source=source)

        self._set_interventions((*self._wanted_base(), make))

    def _set_interventions(self, knockouts: tuple) -> None:
        """Build the model with `knockouts` (each a Knockout, or a function of the job's context that
        measures one: a mean) on the job thread, then switch every panel to it keeping the selection.
        A failure or Cancel keeps the model shown. Its own job key: a knock-out never supersedes a
        model or weights load (nor a detection's explanation), and a load cancels it."""
        model = self.session.model
        if model is None:
            return
        if self._pending is not None:
            self.message.emit("Knock-out not applied: a model is still loading")
            return
        intact = model.original

        def work(context):
            from cnnviewer.engine.errors import Cancelled
            from cnnviewer.engine.experiments.knockout import intervene
            every = tuple(k(context) if callable(k) else k for k in knockouts)
            if context.cancel.is_set():
                raise Cancelled()
            return intervene(intact, every)

        def done(derived) -> None:
            self._wanted = None
            if self.session.model is None or self.session.model.original is not intact:
                return          # another model was loaded meanwhile
            with self.jobs.held():
                self.session.set_model(derived, keep_selection=True)
                self.interventions_changed.emit(derived.interventions)
            count = len(derived.interventions)
            self.message.emit(f"{count} knock-out{'s' * (count != 1)} active: every panel shows {derived.title}"
                              if count else f"Knock-outs cleared: {derived.title} intact")

        def failed(text: str) -> None:
            self._wanted = None
            self.message.emit(f"Knock-out not applied: {text}")

        self._wanted = tuple(knockouts)
        self.jobs.submit("knockout", work, on_done=done, on_error=failed, label="Applying knock-outs")   # the job thread: it runs the shared layers

    def show_checkpoint(self, model, note: str) -> None:
        """Another checkpoint of the network shown (ui.checkpoints): the layer, channel and class stay,
        so every panel shows checkpoint k where it was."""
        with self.jobs.held():
            self.session.set_model(model, keep_selection=True)
            self.interventions_changed.emit(())
        self.message.emit(note)
