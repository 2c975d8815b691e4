"""Every panel by the name `cnnviewer export` and the dock keys use, with how to build it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

from cnnviewer.ui.panels.architecture import ArchitecturePanel
from cnnviewer.ui.panels.compare import ComparePanel
from cnnviewer.ui.panels.dataset.panel import DatasetPanel
from cnnviewer.ui.panels.feature_maps import FeatureMapsPanel
from cnnviewer.ui.panels.filters import FiltersPanel
from cnnviewer.ui.panels.gradients import GradientsPanel
from cnnviewer.ui.panels.live_detection import LiveDetectionPanel
from cnnviewer.ui.panels.model_summary import ModelSummaryPanel
from cnnviewer.ui.panels.predictions import PredictionsPanel
from cnnviewer.ui.panels.receptive_field import ReceptiveFieldPanel
from cnnviewer.ui.panels.synthesis.panel import SynthesisPanel

if TYPE_CHECKING:
    from cnnviewer.engine.session import Session
    from cnnviewer.ui.controller import Controller
    from cnnviewer.ui.jobs import UiJobs

PanelFactory = Callable[["Session", "UiJobs", "Controller"], QWidget]

# name (as `cnnviewer export` spells it) -> factory; every panel subscribes to the session itself.
PANELS: dict[str, PanelFactory] = {
    "predictions": lambda session, _jobs, _controller: PredictionsPanel(session),
    "feature-maps": lambda session, jobs, controller: FeatureMapsPanel(session, jobs, controller.workbench),
    "filters": lambda session, jobs, controller: FiltersPanel(session, jobs, controller.workbench),
    "model-summary": lambda session, jobs, controller: ModelSummaryPanel(session, jobs, controller.workbench),
    "receptive-field": lambda session, jobs, controller: ReceptiveFieldPanel(session, jobs, controller.workbench),
    "architecture": lambda session, jobs, controller: ArchitecturePanel(session, jobs, controller.workbench),
    "gradients": lambda session, jobs, controller: GradientsPanel(session, jobs, controller.workbench),
    "live-detection": lambda session, jobs, controller: LiveDetectionPanel(session, jobs, controller),
    "compare": lambda session, jobs, controller: ComparePanel(session, jobs, controller),
    "dataset": lambda session, jobs, controller: DatasetPanel(session, jobs, controller),
    "synthesis": lambda session, jobs, controller: SynthesisPanel(session, jobs, controller),
}


def build_panel(name: str, session: Session, jobs: UiJobs, controller: Controller) -> QWidget:
    """A new panel called `name` (see PANELS) looking at `session`."""
    return PANELS[name](session, jobs, controller)
