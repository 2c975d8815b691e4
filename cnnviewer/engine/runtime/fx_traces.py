"""Another thread's torch.fx trace, seen from a thread that only runs models.

While torch.fx traces a model it patches `nn.Module.__call__` and `__getattr__`
on the class itself, for the whole process (torch/fx/_symbolic_trace.py). A
model run meanwhile on another thread goes through that tracer's wrapper, which
raises NameError ("module is not installed as a submodule") for any module
outside the model being traced. The live detector runs next to the job thread,
which traces the session's model (Architecture, Summary, a clicked detection's
explanation): the frame being detected then got an error instead of a result,
and a Step while paused showed nothing (the two-stage detector test, 1 full run
in 4). These helpers tell that failure apart and wait the trace out, so the run
can be made again.

torch is imported inside the functions: callers import this module lazily, on
the thread that runs models.
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.005


def broken_by_a_trace(error: BaseException) -> bool:
    """Whether `error` came out of torch.fx's tracing wrappers. A thread that traces nothing itself
    only reaches them while another thread's trace has `nn.Module` patched."""
    from torch.fx import _symbolic_trace

    traced_file = _symbolic_trace.__file__
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == traced_file:
            return True
        frame = frame.tb_next
    return False


def trace_in_progress() -> bool:
    """Whether some thread's fx trace has `nn.Module.__call__` patched right now."""
    from torch import nn
    from torch.fx import _symbolic_trace

    return nn.Module.__call__ is not _symbolic_trace._orig_module_call


def wait_for_traces(timeout: float, stop: Callable[[], bool] = lambda: False) -> bool:
    """Wait until no fx trace has `nn.Module` patched; False if one still has after `timeout` seconds
    (or `stop()` turned true), so the caller reports its error instead of waiting for ever."""
    deadline = time.monotonic() + timeout
    while trace_in_progress():
        if stop() or time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True
