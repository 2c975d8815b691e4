"""`cnnviewer.show(model)`: the app's own window started on an in-memory module (caller's thread).

No torch here: the module is checked with the caller's own torch (already imported: it made the
module), and copied on the job thread (Controller.adopt_module).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from cnnviewer.python_api.inputs import check_image, to_input_image
from cnnviewer.python_api.loop import (
    current_shell,
    enable_ipython_qt,
    pause_collector,
    plan_event_loop,
    qt_loop_running,
    refuse_foreign_qt,
    refuse_other_thread,
    resume_collector,
)
from cnnviewer.python_api.viewer import Viewer, _check_labels, _is_module


def show(model: Any, image: Any = None, labels: Sequence[str] | None = None, preprocess: Any = None, *,
         block: bool | None = None, live: bool = False, title: str | None = None) -> Viewer:
    """Open cnnviewer's window on an in-memory nn.Module.

    Args:
        model: the network. By default the window works on a snapshot: a deep copy made on the app's
            job thread, and `show` returns only once it exists, so your next training step cannot
            race it. Your module is left exactly as found (mode, requires_grad, no hooks).
        image: a path, PIL image, numpy array or tensor (see `Viewer.set_image`); None: the sample photo.
        labels: class names, one per output.
        preprocess: a torchvision transform (Compose of Resize, CenterCrop, ToTensor / PILToTensor /
            ConvertImageDtype, Normalize; or a weights' `.transforms()` preset); None: inferred
            (timm's pretrained_cfg, else ImageNet's resize 256, crop 224, mean and std).
        block: None: in a plain script, run until the window closes; in IPython / Jupyter, return at
            once (turning on `%gui qt` if it is off); inside a running Qt app, return at once.
            True: run until the window closes. False: return at once (a script must then run Qt's loop).
        live: look at `model` itself, not a copy. The views then read the very weights your training
            loop writes: a view computed during an optimizer step may mix old and new weights, and a
            gradient view may fail if a step lands inside its backward pass; nothing redraws by itself
            (call `viewer.refresh()`); weights must be float32 (a conversion would be a copy). Eval mode
            and requires_grad are switched on a copy of the module tree sharing your tensors, so your
            module's modes and flags are still never touched. Memory: no second copy of the weights.
        title: the model's name in the title bar (default: its class name), marked "(from Python)".

    Returns:
        The Viewer (after the window closed, when blocking).

    Raises:
        RuntimeError: called from a thread other than the main (Qt GUI) thread.
        ImportError: another Qt binding (PyQt5, PyQt6, PySide2) is already imported in this process.
        TypeError, ValueError: a non-Module, an image or labels of the wrong kind or shape, a
            preprocess that cannot be mapped (naming the step): one line; no window stays open.
    """
    started = time.perf_counter()
    refuse_foreign_qt()
    refuse_other_thread()
    if not _is_module(model):
        raise TypeError(f"cnnviewer.show needs a torch.nn.Module, got {type(model).__name__}")
    check_image(image)
    _check_labels(labels)
    hold = pause_collector()
    try:
        return _show(model, image, labels, preprocess, block, live, title, started, hold)
    except BaseException:
        resume_collector(hold)   # no window is left open
        raise


def _show(model: Any, image: Any, labels: Sequence[str] | None, preprocess: Any, block: bool | None,
          live: bool, title: str | None, started: float, hold: list[bool]) -> Viewer:
    from cnnviewer.ui.app import set_identity, start_window

    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv and sys.argv[0] else "cnnviewer"])
        set_identity(app)
    shell = current_shell()
    plan = plan_event_loop(block, shell=shell, qt_loop_running=qt_loop_running())
    if plan.enable_gui:
        enable_ipython_qt(shell)
    if shell is not None:
        from cnnviewer.python_api import kernel_wake
        kernel_wake.install(shell)   # ipykernel's Qt loop can miss a cell's wake-up (kernel_wake.py)
    viewer, settings = Viewer(live), QSettings("cnnviewer", "cnnviewer")
    viewer._hold = hold
    box: dict[str, Any] = {}

    def launch(controller: Any, window: Any) -> None:
        viewer._attach(window, controller, settings)
        controller.adopt_module(model, name=title or type(model).__name__, labels=labels, preprocess=preprocess,
                                live=live, on_done=lambda m: box.setdefault("model", m),
                                on_error=lambda text: box.setdefault("error", text))
        if image is None:
            controller.open_sample("chelsea")
        else:
            controller.jobs.submit("image", lambda _context: to_input_image(image),
                                   on_done=lambda picture: (window.session.set_image(picture), box.setdefault("image", 1)),
                                   on_error=lambda text: box.setdefault("error", text))

    window = start_window(argparse.Namespace(device=None, precision="fp32"), settings, started, launch=launch)
    try:
        viewer._pump(lambda: "error" in box or ("model" in box and (image is None or "image" in box)),
                     600.0, "the model copy")
        if "error" in box:
            raise ValueError(box["error"])
    except BaseException:
        window.close()
        raise
    viewer._source = model
    if plan.block:
        app.exec()
    return viewer
