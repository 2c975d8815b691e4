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

The same deadlock comes back through Python's cycle collector: it runs on
whichever thread happens to allocate, so a panel caught in a reference cycle
(a psygnal slot holding a lambda that holds the panel) was once destroyed on
the job thread, whose QObject destructor then waited for the GIL while the GUI
thread waited for its mutex. The dispatcher therefore switches automatic
collection off and collects on the GUI thread (pyqtgraph's GarbageCollector).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer

POLL_MS = 8
GC_INTERVAL_S = 0.5


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
        from pyqtgraph.util.garbage_collector import GarbageCollector
        self._collector = GarbageCollector(interval=GC_INTERVAL_S)   # gc only on this thread from now on

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
