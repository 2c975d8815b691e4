"""Render a panel to PNG without showing a window (for figures and scripts)."""

from __future__ import annotations

import os
import sys
import time

from cnnviewer.engine.errors import CnnViewerError
from cnnviewer.engine.types import EXPORT_PANELS


def _settle(app, jobs, timeout: float = 120.0) -> None:
    """Process events until the job thread is idle and every callback was delivered."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3:
        app.processEvents()
        if jobs.runner.is_busy():
            quiet = 0
            jobs.runner.wait_idle(0.05)
        else:
            quiet += 1
            time.sleep(0.01)
        if time.monotonic() > deadline:
            raise CnnViewerError("export timed out waiting for the model")


def _quiet_offscreen(_kind, _context, message: str) -> None:
    """Pass Qt's messages on, except the offscreen plugin's notice about size hints
    (harmless, and the CLI promises a single line on stderr)."""
    if "propagateSizeHints" not in message:
        print(message, file=sys.stderr)


def _check_channel(panel: str, widget, channel: int | None) -> None:
    """Refuse a channel the chosen layer does not have (instead of silently drawing none)."""
    if channel is None or panel != "feature-maps" or widget.view is None:
        return
    count = widget.view.values.shape[0]
    if channel >= count:
        raise CnnViewerError(f"layer {widget.view.layer} has {count} channels; --channel {channel} is out of range")


def export_panel(panel: str, model, image, output: str, *, layer: str | None = None,
                 channel: int | None = None, neuron: tuple[int, int] | None = None,
                 size: tuple[int, int] = (1000, 700)) -> None:
    """Draw `panel` for this model and image exactly as the app does, and save it.

    Raises:
        CnnViewerError: unknown panel or layer, or the file cannot be written.
    """
    if panel not in EXPORT_PANELS:
        raise CnnViewerError(f"unknown panel {panel!r}; choose {', '.join(EXPORT_PANELS)}")
    if layer is not None and layer not in model.layer_names:
        raise CnnViewerError(f"{model.name} has no layer {layer!r}")
    if channel is not None and channel < 0:
        raise CnnViewerError(f"--channel must be 0 or more, not {channel}")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    from cnnviewer.engine.jobs import JobRunner
    from cnnviewer.engine.session import Session
    from cnnviewer.ui.controller import Controller
    from cnnviewer.ui.jobs import UiJobs
    from cnnviewer.ui.panels.registry import build_panel

    qInstallMessageHandler(_quiet_offscreen)
    app = QApplication.instance() or QApplication(["cnnviewer"])
    session = Session()
    jobs = UiJobs(JobRunner(torch_threads=None))
    errors: list[str] = []
    jobs.failed.connect(errors.append)
    controller = Controller(session, jobs)
    try:
        if panel == "receptive-field" and layer is None:
            raise CnnViewerError("receptive-field needs --layer (and --neuron Y X, default: the centre)")
        widget = build_panel(panel, session, jobs, controller)
        widget.resize(*size)
        widget.show()
        session.set_model(model)
        session.set_image(image)
        _settle(app, jobs)
        if layer is not None or channel is not None or neuron is not None:
            session.select(layer=layer or session.selection.layer, channel=channel, neuron=neuron)
            _settle(app, jobs)
        _check_channel(panel, widget, channel)
        if errors:
            raise CnnViewerError(errors[-1])
        from cnnviewer.engine.media.files import atomic_output
        with atomic_output(output) as temporary:
            if panel == "architecture":   # the whole graph, not the part the view shows
                if widget.graph is None:
                    raise CnnViewerError("the architecture graph could not be built")
                if output.lower().endswith(".svg"):
                    widget.export_svg(str(temporary))
                    if temporary.stat().st_size == 0:
                        raise CnnViewerError(f"{output}: the SVG could not be written")
                elif not widget.export_png(str(temporary)):
                    raise CnnViewerError(f"{output}: cannot write PNG there")
            elif not widget.grab().save(str(temporary), "PNG"):
                raise CnnViewerError(f"{output}: cannot write PNG there")
    finally:
        jobs.runner.close()
