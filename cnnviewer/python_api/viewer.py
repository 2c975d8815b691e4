"""The `Viewer` handle `cnnviewer.show(model)` returns (the caller's thread = Qt's GUI thread).

Nothing here imports or runs torch: the module is copied, images converted and transforms mapped
on the app's job thread (python_api.adopt, python_api.inputs), and the window is the app's own,
started by `ui.app.start_window`. A method waits by running Qt's event loop, so the window stays
responsive while it waits, inside a script, IPython or a Jupyter kernel alike.
"""

from __future__ import annotations

import difflib
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, QSettings
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from cnnviewer.python_api.inputs import FROM_PYTHON, check_image, to_input_image
from cnnviewer.python_api.loop import resume_collector

REMEMBERED = ("last_model", "last_weights")   # what the next `cnnviewer` launch reopens
def _is_module(value: Any) -> bool:
    """An nn.Module, checked without importing torch: a caller holding one has imported it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


def _check_labels(labels: Sequence[str] | None) -> None:
    if labels is not None and (isinstance(labels, str) or not all(isinstance(x, str) for x in labels)):
        raise TypeError("labels must be a sequence of class names (strings), e.g. ['cat', 'dog']")


class _CloseWatch(QObject):
    """Notes that the window was closed (a closed window's job thread is stopped for good)."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        super().__init__()
        self._on_close = on_close

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.Close:
            self._on_close()
        return False


class Viewer:
    """The window `cnnviewer.show()` opened, driven from Python.

    Every method must be called on the thread that called `show()` (Qt's GUI thread; in Jupyter and
    IPython, the thread running your cells): from any other thread it raises RuntimeError rather
    than touch Qt there. Methods that change what is shown wait until the job thread answered and
    raise ValueError / TypeError with one line when it refused; the window keeps what it showed.

    Attributes:
        window: the app's MainWindow (docks in `window.docks`, the session in `window.session`).
        live: whether the current in-memory model is viewed live (see `show`).
    """

    def __init__(self, live: bool) -> None:
        self.window: Any = None
        self.live = live
        self._thread = threading.current_thread()
        self._closed = False
        self._source: Any = None           # the caller's module of the current from-Python model
        self._settings: QSettings | None = None
        self._remembered: dict[str, Any] = {}
        self._forward_error: str | None = None
        self._hold = [False]   # the collector pause this window holds (set by show)

    # ---------------------------------------------------------------- wiring (show)
    def _attach(self, window: Any, controller: Any, settings: QSettings) -> None:
        self.window, self._controller, self._settings = window, controller, settings
        self._remembered = {key: settings.value(key) for key in REMEMBERED}
        self._watch = _CloseWatch(self._on_closed)
        window.installEventFilter(self._watch)
        controller.model_loaded.connect(self._on_model_loaded)   # after the window's own slot
        window.session.forward_failed.connect(self._on_forward_failed)
        for signal in (window.session.forward_changed, window.session.image_changed, window.session.model_changed):
            signal.connect(lambda _value: self._on_forward_failed(None))   # an error is about one model and image

    def _on_closed(self) -> None:
        if not self._closed:
            self._closed = True
            resume_collector(self._hold)   # the job thread stops with the window: none left to deadlock

    def _on_forward_failed(self, text: str | None) -> None:
        self._forward_error = text

    def _on_model_loaded(self, model: Any) -> None:
        """Keep the app's remembered model: an in-memory module cannot be reopened at the next launch."""
        if model.name.endswith(FROM_PYTHON):
            for key, value in self._remembered.items():
                if value is None:
                    self._settings.remove(key)
                else:
                    self._settings.setValue(key, value)
        else:
            self._remembered = {key: self._settings.value(key) for key in REMEMBERED}

    # ---------------------------------------------------------------- waiting
    def _guard(self) -> None:
        if threading.current_thread() is not self._thread:
            raise RuntimeError("Viewer methods must be called on the thread that called cnnviewer.show() "
                               "(Qt's GUI thread); Qt widgets cannot be touched from another thread")
        if self._closed or self.window is None:
            raise RuntimeError("the cnnviewer window was closed; call cnnviewer.show() again")

    def _pump(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Run Qt's event loop until `done()` (job results reach the GUI thread through it)."""
        app, deadline = QApplication.instance(), time.monotonic() + timeout
        while not done():
            if self._closed:
                raise RuntimeError(f"the cnnviewer window was closed while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"cnnviewer: {what} took more than {timeout:g} s")
            app.processEvents()
            time.sleep(0.005)   # the job thread gets the GIL meanwhile

    def _run_job(self, submit: Callable[[Callable, Callable], None], what: str, timeout: float) -> Any:
        """Submit through `submit(on_done, on_error)` and wait; an error becomes ValueError."""
        box: dict[str, Any] = {}
        submit(lambda result: box.setdefault("done", result), lambda text: box.setdefault("error", text))
        self._pump(lambda: bool(box), timeout, what)
        if "error" in box:
            raise ValueError(box["error"])
        return box["done"]

    def _settle(self, timeout: float, quiet_s: float = 0.3) -> None:
        """Until the job thread has been idle for `quiet_s`, every result delivered (as `cnnviewer
        export` waits): longer than the panels' debounce timers (80-150 ms), which start their jobs."""
        runner, since = self._controller.jobs.runner, {"t": time.monotonic()}

        def idle() -> bool:
            now = time.monotonic()
            if runner.is_busy():
                since["t"] = now
            return now - since["t"] >= quiet_s

        self._pump(idle, timeout, "the panels")

    # ---------------------------------------------------------------- the API
    def wait_until_ready(self, timeout: float = 120.0) -> None:
        """Wait until the current model's predictions on the current image are shown.

        Raises:
            RuntimeError: the model could not run on the image (the reason, one line).
            TimeoutError: not within `timeout` seconds.
        """
        self._guard()
        session = self.window.session
        self._pump(lambda: self._forward_error is not None or (
            session.forward is not None and session.model is not None
            and session.forward.model_token == session.model.token), timeout, "the first predictions")
        if self._forward_error is not None:
            raise RuntimeError(f"the model could not run on the image: {self._forward_error}")

    @property
    def predictions(self) -> list[tuple[str, float]]:
        """The top-5 shown now, best first: (label, probability); empty until the model ran."""
        forward = self.window.session.forward
        return [] if forward is None else [(p.label, p.probability) for p in forward.predictions]

    def set_image(self, image: Any, timeout: float = 120.0) -> None:
        """Make `image` every panel's input: a path, PIL image, numpy array (HWC or HW; uint8, or
        float in [0, 1]) or tensor (CHW / HWC / 1CHW; float in [0, 1] or uint8). Converted on the
        job thread; the caller's array or tensor is never written.

        Raises:
            TypeError, ValueError: not an image (one line); the image shown stays.
        """
        self._guard()
        check_image(image)
        if image is None:
            return
        jobs, session = self._controller.jobs, self.window.session
        converted = self._run_job(lambda done, failed: jobs.submit(
            "image", lambda _context: to_input_image(image), on_done=done, on_error=failed,
            label="Opening the image"), "the image", timeout)
        session.set_image(converted)

    def select(self, layer: str | None = None, channel: int | None = None, class_index: int | None = None) -> None:
        """Select what every panel looks at; None leaves that part as it is.

        Args:
            layer: a dotted `named_modules()` name, e.g. 'features.3'.
            channel: a channel of that layer (checked against its output once the model ran).
            class_index: the output explained by the gradient views (None: the top-1 stays).

        Raises:
            ValueError: an unknown layer (near names listed), or a channel / class out of range.
        """
        self._guard()
        self.wait_until_ready()
        session = self.window.session
        names = [name for name in session.model.layer_names if name]
        changes: dict[str, Any] = {}
        if layer is not None:
            if layer not in names:
                near = difflib.get_close_matches(layer, names, n=5, cutoff=0.5) or names[:5]
                raise ValueError(f"{session.model.name} has no layer {layer!r}; near names: {', '.join(near)}")
            changes["layer"] = layer
        if channel is not None:
            target = changes.get("layer", session.selection.layer)
            shape = next((info.output_shape for info in session.forward.layers if info.name == target), None)
            count = shape[0] if shape else None
            if channel < 0 or (count is not None and channel >= count):
                raise ValueError(f"layer {target} has {count} channels; channel {channel} is out of range")
            changes["channel"] = int(channel)
        if class_index is not None:
            outputs = next((info.output_shape for info in session.forward.layers if info.name == ""), None)
            count = outputs[0] if outputs else None
            if class_index < 0 or (count is not None and class_index >= count):
                raise ValueError(f"class_index {class_index} is out of range: the model has {count} outputs")
            changes["class_index"] = int(class_index)
        session.select(**changes)

    def load_model(self, model: Any, labels: Sequence[str] | str | None = None, preprocess: Any = None, *,
                   live: bool | None = None, title: str | None = None, timeout: float = 600.0) -> None:
        """Show another model: an nn.Module (a snapshot, or `live`; default: as at `show`), or a spec the
        app opens ('resnet18', 'timm:NAME', 'FILE.py:NAME'; labels then a labels file's path).

        Raises:
            TypeError, ValueError: one line; the model shown stays.
        """
        self._guard()
        if isinstance(model, str):
            if preprocess is not None or (labels is not None and not isinstance(labels, str)):
                raise TypeError("a named model keeps its own preprocessing; labels must be a labels file's path")
            self._load_spec(model, labels, timeout)
            return
        if not _is_module(model):
            raise TypeError(f"expected a torch.nn.Module or a model name, got {type(model).__name__}")
        _check_labels(labels)   # type: ignore[arg-type]
        live = self.live if live is None else live
        self._run_job(lambda done, failed: self._controller.adopt_module(
            model, name=title or type(model).__name__, labels=labels, preprocess=preprocess, live=live,
            on_done=done, on_error=failed), "the model copy", timeout)
        self._source, self.live = model, live

    def _load_spec(self, spec: str, labels: str | None, timeout: float) -> None:
        box: dict[str, Any] = {}
        jobs, controller = self._controller.jobs, self._controller
        loaded = lambda model: box.setdefault("done", model)  # noqa: E731
        failed = lambda text: box.setdefault("error", text)  # noqa: E731
        finished = lambda key: key == "model" and box.setdefault("finished", True)  # noqa: E731
        controller.model_loaded.connect(loaded)
        jobs.failed.connect(failed)
        jobs.finished.connect(finished)
        try:
            controller.load_model(spec, labels=labels)
            self._pump(lambda: "done" in box or "finished" in box, timeout, spec)
        finally:
            controller.model_loaded.disconnect(loaded)
            jobs.failed.disconnect(failed)
            jobs.finished.disconnect(finished)
        if "done" not in box:
            raise ValueError(box.get("error", f"{spec} was not loaded"))
        self._source = None

    def refresh(self, timeout: float = 600.0) -> None:
        """Run every panel again on the current model, keeping the selection.

        For `live=True` this is how a training loop's new weights reach the panels (a fresh view of
        the same module: replaced tensors and new layers show too); for a snapshot it re-runs the
        same frozen copy.
        """
        self._guard()
        session = self.window.session
        model, selection = session.model, session.selection
        if model is None or not model.name.endswith(FROM_PYTHON):
            self._controller.refresh_forward()
            return
        # A new view sharing the tensors (a new token, so no cache serves the old answers): of the
        # caller's module when live, else of the snapshot itself, which is never copied twice.
        source = self._source if self.live and self._source is not None else model.original.module
        self._run_job(lambda done, failed: self._controller.adopt_module(
            source, name=model.name, labels=model.categories or None, preprocess=model.preprocess, live=True,
            on_done=done, on_error=failed), "the refreshed model", timeout)
        if selection.layer in session.model.layer_names:
            session.select(layer=selection.layer, channel=selection.channel, neuron=selection.neuron,
                           class_index=selection.class_index)

    def _dock_key(self, panel: str) -> str:
        docks = self.window.docks

        def plain(name: str) -> str:   # a title's "&&" is Qt's escape of the "&" the title bar shows
            return name.strip().lower().replace("&&", "&").replace("-", "_").replace(" ", "_")

        wanted = plain(panel)
        for key, dock in docks.items():
            if wanted in (key, plain(dock.windowTitle())):
                return key
        raise ValueError(f"no panel {panel!r}; choose {', '.join(docks)}")

    def screenshot(self, panel: str = "predictions", path: str | Path | None = None,
                   timeout: float = 300.0) -> str | np.ndarray:
        """Save what a panel shows, once it has drawn the current model and image (as `cnnviewer export`).

        Args:
            panel: a dock's key or title: 'predictions', 'feature_maps', 'filters', 'gradients', ...
            path: a PNG file, written atomically (temporary file, then rename); None: return the pixels.

        Returns:
            The path written, or an (H, W, 4) uint8 RGBA array.
        """
        self._guard()
        key = self._dock_key(panel)
        dock = self.window.docks[key]
        dock.show()
        dock.raise_()
        self.wait_until_ready(timeout)
        widget = self.window.panel_docks.panel(key)   # built now if it never was on screen
        refresh = getattr(widget, "refresh", None)
        if refresh is not None:   # panels compute only while on screen: this one is now
            refresh()
        self._settle(timeout)
        image = dock.widget().grab().toImage().convertToFormat(QImage.Format.Format_RGBA8888)
        if path is None:
            buffer = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
            rows = buffer.reshape(image.height(), image.bytesPerLine())[:, :image.width() * 4]
            return rows.reshape(image.height(), image.width(), 4).copy()
        from cnnviewer.engine.errors import CnnViewerError
        from cnnviewer.engine.media.files import atomic_output
        try:
            with atomic_output(path) as temporary:
                if not image.save(str(temporary), "PNG"):
                    raise CnnViewerError(f"{path}: cannot write a PNG there")
        except CnnViewerError as error:
            raise OSError(str(error)) from None
        return str(path)

    def close(self) -> None:
        """Close the window (its job thread stops); the Viewer cannot be used afterwards."""
        if self.window is not None and not self._closed:
            self._guard()
            self.window.close()
