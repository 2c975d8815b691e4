"""Bring callbacks from the job thread back onto the GUI thread.

JobRunner calls back on its worker thread; Qt widgets may only be touched on
the GUI thread. `Dispatcher.wrap(fn)` returns a function that, called from any
thread, queues `fn` for the GUI thread.

The worker never calls into Qt: it only puts the call on a plain Python
queue, which a GUI-thread timer drains every few milliseconds. Emitting a Qt
signal from the worker instead (the usual idiom) can deadlock under PySide:
the worker holds a Qt signal/slot mutex while it waits for the GIL, and the
GUI thread holds the GIL while it deletes a QObject that needs that mutex
(seen here as a test run that hung).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer

POLL_MS = 8


class Dispatcher(QObject):
    """Lives on the GUI thread; runs queued callables there.

    One per application (`Dispatcher.shared()`), parented to the QApplication,
    so it is never garbage-collected while callbacks may still arrive.
    """

    _shared: Dispatcher | None = None

    @classmethod
    def shared(cls) -> Dispatcher:
        """The application's dispatcher, created on first use (on the GUI thread)."""
        if cls._shared is None:
            from PySide6.QtCore import QCoreApplication
            cls._shared = cls(QCoreApplication.instance())
        return cls._shared

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple]] = queue.SimpleQueue()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._drain)
        self._timer.start()

    def _drain(self) -> None:
        while True:
            try:
                fn, args = self._calls.get_nowait()
            except queue.Empty:
                return
            fn(*args)

    def wrap(self, fn: Callable[..., Any] | None) -> Callable[..., None] | None:
        """A thread-safe version of `fn` that always runs on the GUI thread."""
        if fn is None:
            return None
        return lambda *args: self._calls.put((fn, args))
