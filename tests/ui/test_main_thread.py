"""Callbacks and garbage collection happen on the GUI thread only."""

from __future__ import annotations

import gc
import threading
import weakref

from cnnviewer.ui.main_thread import Dispatcher


class Node:
    """Something that only the cycle collector can free."""

    def __init__(self) -> None:
        self.me = self


def test_cycles_are_collected_on_the_gui_thread_not_where_they_were_made(qtbot):
    """A QObject collected on the job thread deadlocked with the GUI thread; gc now runs on a GUI timer."""
    Dispatcher.shared()
    assert not gc.isenabled()                         # no collection on whichever thread allocates
    made: list[weakref.ref] = []
    alive_on_worker: list[int] = []

    def worker() -> None:
        for _ in range(50_000):                         # far past gen 0's threshold
            made.append(weakref.ref(Node()))
        alive_on_worker.append(sum(ref() is not None for ref in made))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert alive_on_worker == [len(made)]              # nothing was collected on the worker thread
    qtbot.waitUntil(lambda: all(ref() is None for ref in made), timeout=5000)


def test_callbacks_from_a_worker_run_on_the_gui_thread(qtbot):
    seen: list[threading.Thread] = []
    call = Dispatcher.shared().wrap(lambda: seen.append(threading.current_thread()))
    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: seen == [threading.main_thread()], timeout=2000)
