"""Every panel by the name `cnnviewer export` and the dock keys use, with how to build it.

A panel's module is imported when the panel is first built, not with this registry: the window
shows before any panel exists, and pyqtgraph (which most panels draw with) costs 0.2-0.8 s.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PySide6.QtWidgets import QWidget

    from cnnviewer.engine.session import Session
    from cnnviewer.ui.controller import Controller
    from cnnviewer.ui.jobs import UiJobs

# name (as `cnnviewer export` spells it) -> (module under cnnviewer.ui.panels, class, what its third
# argument is); every panel subscribes to the session itself.
PANELS: dict[str, tuple[str, str, str | None]] = {
    "predictions": ("predictions", "PredictionsPanel", None),
    "feature-maps": ("feature_maps", "FeatureMapsPanel", "workbench"),
    "filters": ("filters", "FiltersPanel", "workbench"),
    "model-summary": ("model_summary", "ModelSummaryPanel", "workbench"),
    "receptive-field": ("receptive_field", "ReceptiveFieldPanel", "workbench"),
    "architecture": ("architecture", "ArchitecturePanel", "workbench"),
    "gradients": ("gradients", "GradientsPanel", "workbench"),
    "faithfulness": ("faithfulness.panel", "FaithfulnessPanel", "workbench"),
    "experiments": ("experiments.panel", "ExperimentsPanel", "controller"),
    "live-detection": ("live_detection", "LiveDetectionPanel", "controller"),
    "compare": ("compare", "ComparePanel", "controller"),
    "dataset": ("dataset.panel", "DatasetPanel", "controller"),
    "synthesis": ("synthesis.panel", "SynthesisPanel", "controller"),
}


def build_panel(name: str, session: Session, jobs: UiJobs, controller: Controller) -> QWidget:
    """A new panel called `name` (see PANELS) looking at `session`."""
    import pyqtgraph as pg   # configured before the first panel draws with it

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
    module, class_name, third = PANELS[name]
    panel_class = getattr(import_module(f"cnnviewer.ui.panels.{module}"), class_name)
    if third is None:
        return panel_class(session)
    return panel_class(session, jobs, controller.workbench if third == "workbench" else controller)
