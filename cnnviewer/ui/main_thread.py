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
collection off and collects on the GUI thread (`GuiThreadCollector`).
"""

from __future__ import annotations

import gc
import queue
import sys
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer

POLL_MS = 8
GC_INTERVAL_S = 0.01   # often, so that each collection has little to scan
FREEZE_AFTER_MODULES = 100
MAX_FREEZES = 4


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
        self._collector = GuiThreadCollector(self)   # gc only on this thread from now on

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


class GuiThreadCollector(QObject):
    """Python's cycle collector, run from a GUI-thread timer instead of on whichever thread allocates.

    The generations and thresholds are CPython's, and so is its rule against
    quadratic cost: a full collection only once the objects promoted since the
    last one exceed a quarter of those it kept. Imported modules never become
    garbage, and torch brings ~340,000 objects (more as its submodules load on
    first use): they are frozen once a burst of imports has finished, since
    scanning them made every full collection a 130-200 ms stall. Whatever else
    is alive then is frozen too, so this happens only a few times per process.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        self._modules_at_freeze = 0
        self._freezes = 0
        self._kept = 0        # objects in the oldest generation after the last full collection
        self._promoted = 0    # objects moved into it since (an upper bound: gen 1 before each collection)
        gc.disable()
        self._timer = QTimer(self)
        self._timer.setInterval(int(GC_INTERVAL_S * 1000))
        self._timer.timeout.connect(self.collect)
        self._timer.start()

    def _freeze_new_modules(self) -> None:
        if self._freezes >= MAX_FREEZES or len(sys.modules) < self._modules_at_freeze + FREEZE_AFTER_MODULES:
            return
        torch = sys.modules.get("torchvision")
        if torch is None or getattr(getattr(torch, "__spec__", None), "_initializing", False):
            return   # torch is still being imported on the job thread
        gc.freeze()
        self._modules_at_freeze, self._freezes = len(sys.modules), self._freezes + 1
        self._kept, self._promoted = 0, 0

    def collect(self) -> None:
        """Collect the generations whose thresholds were passed, youngest first."""
        self._freeze_new_modules()
        young, middle, old = gc.get_count()
        if young <= self._thresholds[0]:
            return
        if middle <= self._thresholds[1]:
            gc.collect(0)
            return
        # No full collection before the first freeze: it would scan torch while it is being imported.
        if old <= self._thresholds[2] or self._promoted <= self._kept // 4 or not self._freezes:
            self._promoted += len(gc.get_objects(generation=1)) + young
            gc.collect(1)
            return
        gc.collect(2)
        self._kept, self._promoted = len(gc.get_objects(generation=2)), 0
