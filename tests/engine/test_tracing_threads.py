"""fx traces (runtime/tracing.py) next to model runs and traces on other threads.

fx patches nn.Module for the whole process while it traces: another thread's
model run went through the tracer and failed, and two overlapping traces left
nn.Module patched for good. The traces here are held open with events.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn
from torch.fx import _symbolic_trace

from cnnviewer.engine.runtime.tracing import LeafTracer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _held_trace(inside: threading.Event, release: threading.Event) -> threading.Thread:
    class Held(nn.Module):
        def forward(self, x):
            inside.set()
            assert release.wait(60)
            return x + 1

    thread = threading.Thread(target=lambda: LeafTracer().trace(Held()), daemon=True)
    thread.start()
    assert inside.wait(30)
    return thread


def test_a_model_runs_on_another_thread_while_a_trace_is_held_open():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()).eval()
    image = torch.rand(1, 3, 8, 8)
    expected = net(image)
    inside, release = threading.Event(), threading.Event()
    tracing = _held_trace(inside, release)
    try:
        assert nn.Module.__call__ is not _symbolic_trace._orig_module_call   # fx's patches are in place
        assert torch.equal(net(image), expected)                            # and this run goes through
    finally:
        release.set()
        tracing.join(30)
    assert nn.Module.__call__ is _symbolic_trace._orig_module_call


def test_overlapping_traces_take_turns_and_leave_nn_module_as_found():
    inside, release = threading.Event(), threading.Event()
    first = _held_trace(inside, release)
    graphs = []

    class Small(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, x):
            release.set()          # the first trace ends while this one runs, were they to overlap
            return self.linear(x).relu()

    second = threading.Thread(target=lambda: graphs.append(LeafTracer().trace(Small())), daemon=True)
    second.start()
    second.join(0.3)
    assert second.is_alive() and not graphs     # waits for the first trace
    release.set()
    first.join(30)
    second.join(30)
    assert [n.op for n in graphs[0].nodes] == ["placeholder", "call_module", "call_method", "output"]
    assert nn.Module.__call__ is _symbolic_trace._orig_module_call
    assert nn.Linear(2, 2)(torch.zeros(1, 2)).shape == (1, 2)
