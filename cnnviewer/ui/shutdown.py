"""Closing the window: every thread and process the app started is stopped, in order, before exit.

A thread still running torch code when the interpreter tears down can abort the process with
"terminate called without an active exception" (seen once at quit after a long session), so
nothing is left to the daemon flag: the camera and video reader go first (they feed the detector),
then the detector thread, then the job thread after it has stopped an unfinished index build's
decoding workers (they hold torch DataLoader state that only the job thread touches), then any
model load the job thread had abandoned.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def stop_everything(window: Any, timeout: float = 15.0) -> bool:
    """Stop live video, detection, indexing, synthesis and loads; True if all stopped in time."""
    live = window.panel_docks.built("live_detection")   # a panel never shown has nothing running
    if live is not None:
        live.shutdown()
    dataset = window.panel_docks.built("dataset")
    build = getattr(dataset, "_build", None)   # an index build in progress (the panel's own handle)
    if dataset is not None:
        dataset._build = None

    def stop_build() -> None:
        if build is not None:
            build.checkpoint()   # Resume goes on from here at the next launch
            build.close()

    stopped = window.jobs.runner.close(last=stop_build, timeout=timeout)
    if not stopped:
        log.warning("some background work did not stop within %.0f s of closing", timeout)
    return stopped
