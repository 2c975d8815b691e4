"""Import torch and torchvision with the cyclic garbage collector paused, then freeze what they made.

Their import creates a few million long-lived objects (modules, classes, functions, operator
tables). With the collector running, every full collection during the import walks all of them
again: 1.5 s of the import's 4.6 s of CPU on this machine. After it, every full collection keeps
walking them too (0.1-0.4 s of the first forward pass, traced with torch.fx). `gc.freeze()` moves
everything alive at that moment into a generation the collector never visits; those objects live
as long as the process anyway.
"""

from __future__ import annotations

import gc
import sys
import threading

_lock = threading.Lock()


def import_torch() -> None:
    """Import torch and torchvision. Only the import that loads torch pauses and freezes: freezing
    again later would keep everything alive then (closed windows' garbage among it) for good."""
    with _lock:
        if "torch" in sys.modules and "torchvision" in sys.modules:
            return
        enabled = gc.isenabled()
        gc.disable()
        try:
            import torch  # noqa: F401
            import torchvision  # noqa: F401
        finally:
            gc.freeze()
            if enabled:
                gc.enable()
