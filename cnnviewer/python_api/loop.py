"""Who runs Qt's event loop once `show()` returns: the caller's IPython, a running Qt app, or show itself.

napari's rule: in IPython the prompt must stay usable, so Qt's loop runs between prompts (`%gui qt`);
a plain script has no loop at all, so `show()` runs one until the window closes. And the one
process-wide setting a window changes, the cycle collector, is handed back when it closes.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from typing import Any

_told = {"enabled": False}   # the "%gui qt enabled for you" note is printed once per process


@dataclass(frozen=True)
class LoopPlan:
    """What `show()` does about the event loop.

    Attributes:
        block: run the event loop until the window closes before returning.
        enable_gui: call IPython's `enable_gui("qt")` first (IPython is running without it).
    """

    block: bool
    enable_gui: bool = False


def qt_gui_active(shell: Any) -> bool:
    """Whether IPython (terminal or kernel) already runs Qt's loop between prompts (`%gui qt`)."""
    loop = getattr(shell, "active_eventloop", None)
    if loop is None:    # ipykernel keeps it on the kernel too
        loop = getattr(getattr(shell, "kernel", None), "eventloop", None)
        loop = getattr(loop, "__name__", loop)
    return isinstance(loop, str) and "qt" in loop.lower()


def plan_event_loop(block: bool | None, *, shell: Any, qt_loop_running: bool) -> LoopPlan:
    """Decide, from the caller's `block` and what is running, whether to block or hand over.

    Args:
        block: None = automatic; True = run the loop here until the window closes; False = return at once.
        shell: the running IPython shell, or None.
        qt_loop_running: a Qt event loop is running on this thread (show called from inside a Qt app).
    """
    if qt_loop_running:      # the caller's loop already serves the window; a nested one would only stall it
        return LoopPlan(block=False)
    if shell is not None:
        if block:
            return LoopPlan(block=True)
        return LoopPlan(block=False, enable_gui=not qt_gui_active(shell))
    return LoopPlan(block=True if block is None else bool(block))


# Qt bindings other than PySide6, by the module IPython's qt_loaders checks ("if this returns
# anything, importing any other Qt binding is unsafe"): two Qt libraries in one process either
# crash or leave one of them without an event loop (%gui qt would run the other binding's).
FOREIGN_QT = ("PyQt6.QtCore", "PyQt5.QtCore", "PySide2.QtCore", "PyQt4.QtCore", "PySide.QtCore")


def refuse_foreign_qt() -> None:
    """Refuse before PySide6 is imported or a window made when another Qt binding is loaded.

    Raises:
        ImportError: one line naming the binding already imported.
    """
    loaded = next((name.split(".")[0] for name in FOREIGN_QT if sys.modules.get(name) is not None), None)
    if loaded is not None:
        raise ImportError(f"cnnviewer's window is built on PySide6, but this Python process already imported "
                          f"{loaded}: two Qt bindings in one process are unsafe; call cnnviewer.show in a "
                          f"session (kernel) that has not imported {loaded}")


def refuse_other_thread() -> None:
    """Qt's widgets live on the thread that made the QApplication (the main thread if none exists yet):
    from any other thread a window would crash the process or never draw.

    Raises:
        RuntimeError: one line.
    """
    import threading

    from PySide6.QtCore import QThread
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance()
    if app is not None and QThread.currentThread() is not app.thread() or \
            app is None and threading.current_thread() is not threading.main_thread():
        raise RuntimeError("cnnviewer.show must be called on the main thread (Qt's GUI thread), not from "
                           f"thread {threading.current_thread().name!r}")


def current_shell() -> Any:
    """The running IPython shell, or None (IPython is never imported here if the caller did not)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    return get() if get is not None else None


def qt_loop_running() -> bool:
    """A Qt event loop is running on the calling thread (e.g. show() from a button of a Qt app)."""
    from PySide6.QtCore import QCoreApplication, QThread
    return QCoreApplication.instance() is not None and QThread.currentThread().loopLevel() > 0


def enable_ipython_qt(shell: Any) -> None:
    """Turn on `%gui qt` for the user (napari does the same), saying so once."""
    shell.enable_gui("qt")
    if not _told["enabled"]:
        _told["enabled"] = True
        print("cnnviewer: enabled IPython's Qt event loop (%gui qt) so the prompt stays usable while the "
              "window is open", file=sys.stderr)


# While a window lives, Python's cycle collector runs only from a GUI-thread timer (ui.main_thread:
# run on the job thread it deadlocked PySide). `show` pauses it from its first line, since a full
# collection over the caller's heap (torch's millions of objects) cost ~0.3 s of the window's start;
# it is switched back on when the last window opened from Python closes, if it was on before.
_collector = {"open": 0, "was_enabled": False}


def pause_collector() -> list[bool]:
    """Pause; returns the hold that `resume_collector` releases (once, however often it is called)."""
    if _collector["open"] == 0:
        _collector["was_enabled"] = gc.isenabled()
    _collector["open"] += 1
    gc.disable()
    return [True]


def resume_collector(hold: list[bool]) -> None:
    """Release `hold`; the last one released switches the collector back on if it was on."""
    if not hold[0]:
        return
    hold[0] = False
    _collector["open"] -= 1
    if _collector["open"] == 0 and _collector["was_enabled"]:
        gc.enable()
