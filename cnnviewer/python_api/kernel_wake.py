"""A wake-up for Jupyter's Qt event loop while a cnnviewer window lives.

ipykernel's `%gui qt` runs Qt's loop until a QSocketNotifier on the shell socket's file
descriptor fires. ZeroMQ's descriptor is edge-triggered: a message whose edge was consumed
while the notifier was off (between two turns of the loop) never fires it again, and the cell
then waits until the notebook happens to send another message. With a window busy on the GUI
thread this happened in about 1 in 4 kernel sessions here. ipykernel's own wake-up is a
`flush(limit=1)` of the shell stream when the notifier fires; this timer does that same check
every 50 ms, so a waiting cell runs within 50 ms instead of never.
"""

from __future__ import annotations

import sys
from typing import Any

POLL_MS = 50


def install(shell: Any) -> bool:
    """Poll the kernel's shell stream from the GUI thread (once per kernel); False outside ipykernel."""
    kernel = getattr(shell, "kernel", None)
    eventloops = sys.modules.get("ipykernel.eventloops")
    app = getattr(kernel, "app", None)
    if kernel is None or eventloops is None or getattr(app, "qt_event_loop", None) is None:
        return False
    if getattr(kernel, "_cnnviewer_wake", None) is not None:
        return True
    from PySide6.QtCore import QTimer

    def poll() -> None:
        if not getattr(app, "_in_event_loop", False):
            return   # the kernel is running a cell: its own loop reads the socket
        try:
            stream = (eventloops.get_shell_stream(kernel) if hasattr(eventloops, "get_shell_stream")
                      else kernel.shell_stream)
            if stream.flush(limit=1):      # a message was waiting: hand control back, as ipykernel does
                notifier = getattr(kernel, "_qt_notifier", None)
                if notifier is not None:
                    notifier.setEnabled(False)
                app.qt_event_loop.quit()
        except Exception:   # noqa: BLE001 - another ipykernel version: its own wake-up still works
            timer.stop()

    timer = QTimer()
    timer.setInterval(POLL_MS)
    timer.timeout.connect(poll)
    timer.start()
    kernel._cnnviewer_wake = timer
    return True
