"""Start the application: window first, heavy imports and the model after."""

from __future__ import annotations

import argparse
import os
import sys
import time

from cnnviewer.engine.types import DEFAULT_MODEL

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
    app.setApplicationName("cnnviewer")
    app.setOrganizationName("cnnviewer")
    start_window(args, QSettings("cnnviewer", "cnnviewer"), started)
    return app.exec()


def start_window(args: argparse.Namespace, settings, started: float):
    """Build and show the main window, then ask for the launch model and image (job thread).

    `--trust` applies only to the weights file named on this same command line:
    remembered weights from an earlier run are loaded as untrusted, so a
    pickle among them is only ever loaded after the trust dialog.
    """
    import pyqtgraph as pg

    from cnnviewer.engine.jobs import JobRunner
    from cnnviewer.engine.runtime.memory import keep_freed_memory
    from cnnviewer.engine.session import Session
    from cnnviewer.ui.controller import Controller
    from cnnviewer.ui.jobs import UiJobs
    from cnnviewer.ui.main_window import MainWindow

    torch_at_show = "torch" in sys.modules
    keep_freed_memory()
    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
    session = Session()
    jobs = UiJobs(JobRunner(torch_threads=1))
    controller = Controller(session, jobs, device=args.device, precision=args.precision)
    window = MainWindow(session, jobs, controller, settings)
    window.show()
    shown, shown_epoch = time.perf_counter() - started, time.time()

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
                      f"torch_in_gui_thread_at_show={torch_at_show}", flush=True)
                window.close()

    session.forward_changed.connect(report_launch)
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
    return window
