"""The live detector next to another thread's torch.fx trace (engine/runtime/fx_traces.py).

fx patches nn.Module for the whole process while it traces, so a detector run on
another thread meanwhile failed ("module is not installed as a submodule") and
its frame was lost: a paused Step then showed nothing (the flaky two-stage
detector test, when the job thread traced a clicked detection's explanation).
Here the trace is held open with events, so the run is broken every time.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import fx, nn

from cnnviewer.engine.detection.live import LivePipeline
from cnnviewer.engine.media.sources import Frame
from cnnviewer.engine.runtime.fx_traces import broken_by_a_trace, trace_in_progress, wait_for_traces
from tests.media import astronaut_frame

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class HeldTrace:
    """An fx trace on its own thread that stays inside its patches until `release`; `intercepted`
    is set when another thread's module call has gone through this tracer."""

    def __init__(self) -> None:
        self.inside, self.release, self.intercepted = threading.Event(), threading.Event(), threading.Event()
        tracing = threading.get_ident()
        held = self

        class Watching(fx.Tracer):
            def call_module(self, m, forward, args, kwargs):
                if threading.get_ident() != tracing:
                    held.intercepted.set()
                return super().call_module(m, forward, args, kwargs)

        class Held(nn.Module):
            def forward(self, x):
                held.inside.set()
                assert held.release.wait(60)
                return x + 1

        def trace() -> None:
            nonlocal tracing
            tracing = threading.get_ident()
            Watching().trace(Held())

        self._thread = threading.Thread(target=trace, name="held-trace", daemon=True)

    def __enter__(self) -> HeldTrace:
        self._thread.start()
        assert self.inside.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._thread.join(30)


def test_what_a_trace_on_another_thread_does_to_a_model_run():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()).eval()
    image = torch.zeros(1, 3, 8, 8)
    assert not trace_in_progress() and wait_for_traces(0.01)
    with HeldTrace() as held, torch.inference_mode():
        assert trace_in_progress() and not wait_for_traces(0.05)          # still patched: gives up
        with pytest.raises(NameError, match="not installed as a submodule") as broken:
            net(image)
        assert held.intercepted.is_set() and broken_by_a_trace(broken.value)
    assert not trace_in_progress() and net(image).shape == (1, 2, 6, 6)   # over: runs again
    with pytest.raises(RuntimeError) as ordinary:
        net(torch.zeros(1, 5, 8, 8))
    assert not broken_by_a_trace(ordinary.value)                          # an ordinary error is not the trace's


def test_a_frame_whose_run_a_trace_broke_is_detected_once_the_trace_is_over():
    results, errors = [], []
    pipeline = LivePipeline(results.append, on_error=errors.append)
    pixels, _faces = astronaut_frame(0)
    try:
        pipeline.offer(Frame(0, "warm-up", pixels, time.perf_counter()))   # MTCNN built and run once
        deadline = time.time() + 60
        while not results and time.time() < deadline:
            time.sleep(0.02)
        assert results and not errors
        with HeldTrace() as held:
            pipeline.offer(Frame(1, "during a trace", pixels, time.perf_counter()))
            assert held.intercepted.wait(30)           # the detector's run went through the tracer: broken
            time.sleep(0.2)
            assert len(results) == 1 and not errors    # it waits for the trace, neither lost nor reported
        deadline = time.time() + 30
        while len(results) < 2 and time.time() < deadline:
            time.sleep(0.02)
        assert not errors, errors
        assert [r.frame.name for r in results] == ["warm-up", "during a trace"]
        assert results[1].raw and [d.box for d in results[1].raw] == [d.box for d in results[0].raw]
    finally:
        pipeline.close()
