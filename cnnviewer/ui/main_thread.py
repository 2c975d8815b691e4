"""Bring callbacks from the job thread back onto the GUI thread.

JobRunner calls back on its worker thread; Qt widgets may only be touched on
the GUI thread. `Dispatcher.wrap(fn)` returns a function that, called from any
thread, queues `fn` through a Qt signal so it runs on the GUI thread (the same
idea as superqt's `ensure_main_thread`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal, Slot


class Dispatcher(QObject):
    """Lives on the GUI thread; runs queued callables there."""

    _call = Signal(object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._call.connect(self._run, Qt.ConnectionType.QueuedConnection)

    @Slot(object, object)
    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        fn(*args)

    def wrap(self, fn: Callable[..., Any] | None) -> Callable[..., None] | None:
        """A thread-safe version of `fn` that always runs on the GUI thread."""
        if fn is None:
            return None
        return lambda *args: self._call.emit(fn, args)
