"""Render a panel to PNG without showing a window (for figures and scripts)."""

from __future__ import annotations

import os
import time

from cnnviewer.engine.errors import CnnViewerError

PANELS = ("predictions", "feature-maps", "filters")


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


def export_panel(panel: str, model, image, output: str, *, layer: str | None = None,
                 channel: int | None = None, size: tuple[int, int] = (1000, 700)) -> None:
    """Draw `panel` for this model and image exactly as the app does, and save it.

    Raises:
        CnnViewerError: unknown panel or layer, or the file cannot be written.
    """
    if panel not in PANELS:
        raise CnnViewerError(f"unknown panel {panel!r}; choose {', '.join(PANELS)}")
    if layer is not None and layer not in model.layer_names:
        raise CnnViewerError(f"{model.name} has no layer {layer!r}")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from cnnviewer.engine.jobs import JobRunner
    from cnnviewer.engine.session import Session
    from cnnviewer.ui.controller import Controller
    from cnnviewer.ui.jobs import UiJobs
    from cnnviewer.ui.panels.feature_maps import FeatureMapsPanel
    from cnnviewer.ui.panels.filters import FiltersPanel
    from cnnviewer.ui.panels.predictions import PredictionsPanel

    app = QApplication.instance() or QApplication(["cnnviewer"])
    session = Session()
    jobs = UiJobs(JobRunner(torch_threads=None))
    errors: list[str] = []
    jobs.failed.connect(errors.append)
    controller = Controller(session, jobs)
    try:
        if panel == "predictions":
            widget = PredictionsPanel(session)
            controller.forward_ready.connect(widget.show_predictions)
        elif panel == "feature-maps":
            widget = FeatureMapsPanel(session, jobs, controller.workbench)
            controller.forward_ready.connect(widget.show_forward)
        else:
            widget = FiltersPanel(session, jobs, controller.workbench)
        widget.resize(*size)
        widget.show()
        session.set_model(model)
        session.set_image(image)
        _settle(app, jobs)
        if layer is not None or channel is not None:
            session.select(layer=layer or session.selection.layer, channel=channel)
            _settle(app, jobs)
        if errors:
            raise CnnViewerError(errors[-1])
        if not widget.grab().save(output, "PNG"):
            raise CnnViewerError(f"{output}: cannot write PNG there")
    finally:
        jobs.runner.close()
