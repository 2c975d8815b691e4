"""Start the application: window first, heavy imports and the model after."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from cnnviewer.engine.types import DEFAULT_MODEL, ONNX_SUFFIX

# Set by benchmarks/bench_launch.py: print launch timings and quit after the first predictions.
LAUNCH_PROBE_ENV = "CNNVIEWER_LAUNCH_PROBE"


def startup_model(model: str | None, weights: str | None, settings) -> tuple[str, str | None, str]:
    """What to load at launch: the command line's choice, else where the user left off.

    Returns:
        (model spec, weights path or None, a note for the status bar or '').
    """
    if model is not None or weights is not None:
        return model or DEFAULT_MODEL, weights, ""
    spec = str(settings.value("last_model", "") or "") or DEFAULT_MODEL
    last_weights = str(settings.value("last_weights", "") or "")
    weights = last_weights if last_weights and os.path.isfile(last_weights) else None
    if weights is not None and weights.lower().endswith(ONNX_SUFFIX):   # data, not code: reopened, by its
        return weights, None, ""        # absolute path (a relative --model x.onnx names another file elsewhere)
    if ".py" in spec:   # never run an architecture file that was not chosen today
        return DEFAULT_MODEL, None, (f"Last architecture {spec} not reopened: it runs code from a file; "
                                     "open it again with File > Open architecture file")
    return spec, weights, ""


def run_app(args: argparse.Namespace, started: float | None = None) -> int:
    """Show the main window, load the model and image in the background, run the event loop."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    started = time.perf_counter() if started is None else started
    app = QApplication.instance() or QApplication(sys.argv[:1])
    set_identity(app)
    start_window(args, QSettings("cnnviewer", "cnnviewer"), started)
    return app.exec()


def application_version() -> str:
    """The package's version: the installed metadata is built from this same attribute (pyproject's
    dynamic version), and reading it here skips importlib.metadata (30-50 ms before the window shows)."""
    from cnnviewer import __version__

    return __version__


def app_icon():
    """The application icon: every shipped PNG size in one QIcon, so each place picks a sharp one."""
    from PySide6.QtCore import QSize
    from PySide6.QtGui import QIcon

    from cnnviewer.resources import ICON_SIZES, png_icon

    icon = QIcon()
    for size in ICON_SIZES:
        icon.addFile(str(png_icon(size)), QSize(size, size))
    return icon


def set_identity(app) -> None:
    """Name, version, icon and desktop entry of the application, before any window exists.

    The settings stay where they always were: the window reads QSettings("cnnviewer", "cnnviewer"),
    organisation and application named explicitly, and the organisation name set here is that same
    one, so a default-constructed QSettings lands in the same file too. No display name is set: on
    X11 Qt appends it to every window title, and the main window's title already starts with
    "cnnviewer" (applicationDisplayName() falls back to the application name anyway).
    """
    app.setApplicationName("cnnviewer")
    app.setOrganizationName("cnnviewer")
    app.setApplicationVersion(application_version())
    app.setDesktopFileName("cnnviewer")   # Wayland app_id / X11 hints: matches cnnviewer.desktop
    app.setWindowIcon(app_icon())


def start_window(args: argparse.Namespace, settings, started: float,
                 launch: Callable[[Any, Any], None] | None = None):
    """Build and show the main window, then ask for the launch model and image (job thread).

    Args:
        args: the window's options (device, precision; and for the default launch model,
            weights, trust, labels, image).
        launch: `launch(controller, window)` asks for the first model and image; None: what the
            command line names, else where the user left off (`launch_from_args`). `cnnviewer.show`
            passes its in-memory module here, so both start the window by this same code.
    """
    from PySide6.QtCore import QTimer

    from cnnviewer.engine.jobs import JobRunner
    from cnnviewer.engine.runtime.memory import keep_freed_memory
    from cnnviewer.engine.session import Session
    from cnnviewer.ui.controller import Controller
    from cnnviewer.ui.jobs import UiJobs
    from cnnviewer.ui.main_window import MainWindow

    torch_at_show = "torch" in sys.modules
    keep_freed_memory()
    session = Session()
    jobs = UiJobs(JobRunner(torch_threads=1, start=False))   # torch is imported once the panels on screen exist
    controller = Controller(session, jobs, device=args.device, precision=args.precision)
    window = MainWindow(session, jobs, controller, settings)
    window.show()
    shown, shown_epoch = time.perf_counter() - started, time.time()

    def build_then_start() -> None:
        """The panels on screen are built first, then the job thread imports torch: one after the
        other they take less time than side by side (they share one GIL; see JobRunner)."""
        window.panel_docks.build_shown()
        jobs.runner.start()

    QTimer.singleShot(0, build_then_start)

    first = {"done": False}

    def report_launch(_summary) -> None:
        if not first["done"]:
            first["done"] = True
            session.forward_changed.disconnect(report_launch)   # no session -> closure -> window cycle left
            ready = time.perf_counter() - started
            window.forward_label.setToolTip(f"first predictions {ready:.1f} s after launch")
            if not window.statusBar().currentMessage():   # never hide a message the user should read
                window.show_message(f"Ready: first predictions {ready:.1f} s after launch")
            if os.environ.get(LAUNCH_PROBE_ENV):
                print(f"window_shown_s={shown:.3f} first_predictions_s={ready:.3f} "
                      f"window_shown_epoch={shown_epoch:.3f} ready_epoch={time.time():.3f} "
                      f"torch_in_gui_thread_at_show={torch_at_show} timm_loaded={'timm' in sys.modules}",
                      flush=True)
                window.close()

    session.forward_changed.connect(report_launch)
    (launch or launch_from_args(args, settings))(controller, window)
    return window


def launch_from_args(args: argparse.Namespace, settings) -> Callable[[Any, Any], None]:
    """The launch model and image of the `cnnviewer` command: named on its command line, else remembered.

    `--trust` applies only to the weights file named on this same command line:
    remembered weights from an earlier run are loaded as untrusted, so a
    pickle among them is only ever loaded after the trust dialog.
    """
    def launch(controller, window) -> None:
        spec, weights, note = startup_model(args.model, args.weights, settings)
        trust = bool(args.trust and args.weights)
        if args.trust and not args.weights:
            note = note or "--trust applies only to a file named with --weights; nothing was trusted"
        if note:
            window.show_message(note)
        controller.load_model(spec, weights=weights, trust=trust, labels=args.labels)
        if args.image:
            window.open_image(args.image)
        else:
            controller.open_sample("chelsea")
        if getattr(args, "checkpoints", None):   # once the launch model loaded: its architecture is tried first
            window.open_checkpoints(args.checkpoints)

    return launch
