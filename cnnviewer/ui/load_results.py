"""What a model load hands back to the controller, and the engine's Workbench made on first use:
plain values the GUI thread reads (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NeedsTrust:
    """A weights file is a full pickled model; the user must trust it first."""

    path: str
    message: str


@dataclass(frozen=True)
class Loaded:
    """A loaded model, the spec that rebuilds its architecture (None: a whole-model file),
    and what to tell the user when weights meant for it were not applied."""

    model: Any
    spec: str | None
    note: str = ""
    needs_trust: NeedsTrust | None = None


def spec_after_weights(model, previous_name: str | None, previous_spec: str | None) -> str | None:
    """The architecture spec of a model that weights were just loaded into (job thread)."""
    if model.name == previous_name:
        return previous_spec
    from cnnviewer.engine.models.catalogue import classification_models
    from cnnviewer.engine.models.timm_models import is_timm
    return model.name if model.name in classification_models() or is_timm(model.name) else None


class LazyWorkbench:
    """Creates the engine's Workbench on first use, on the job thread (torch imports there)."""

    def __init__(self) -> None:
        self._workbench: Any = None

    def __call__(self):
        if self._workbench is None:
            from cnnviewer.engine.workbench import Workbench
            self._workbench = Workbench()
        return self._workbench
