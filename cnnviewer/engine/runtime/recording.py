"""Record every module's output during one forward pass: the fx recorder, else hooks.

The fast path is a torch.fx rewrite (graph_capture) that returns every
module's output without hooks or clones; models torch.fx cannot trace, or
whose traced copy computes something else, fall back to forward hooks.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from cnnviewer.engine.runtime import graph_capture
from cnnviewer.engine.runtime.hooks import capture_with_hooks
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.types import LayerId

log = logging.getLogger(__name__)


def capture_activations(model: nn.Module, inputs: Tensor) -> tuple[Any, dict[LayerId, Tensor]]:
    """Run one forward pass and return (model output, every module's output).

    Uses the model's torch.fx recorder when it traces (no hooks, no clones; see
    graph_capture), else forward hooks. Gradients are off and every module's
    training flag is restored.
    """
    if isinstance(model, torch.jit.ScriptModule):
        # Compiled code: neither torch.fx nor forward hooks reach inside it. The output is all there is.
        with eval_mode(model), torch.inference_mode():
            return model(inputs), graph_capture.Activations.of({})
    with eval_mode(model):
        recorder = graph_capture.graph_recorder(model)
        if recorder is not None:
            try:
                with torch.inference_mode():
                    output, recorded = recorder(inputs)
                    if recorder.verified or _same(output, model(inputs)):
                        recorder.verified = True
                        return output, recorded
                log.warning("traced copy of %s computes something else; using hooks", type(model).__name__)
                graph_capture.forget(model)
            except Exception as error:  # noqa: BLE001 - a bad trace must not break the app
                log.warning("traced recording of %s failed (%s); using hooks", type(model).__name__, error)
                graph_capture.forget(model)
        output, recorded = capture_with_hooks(model, inputs)
        return output, graph_capture.Activations.of(recorded)


def prepare_capture(model: nn.Module, inputs: Tensor) -> None:
    """Trace and check the model's recorder now, so the next capture times only the pass."""
    if isinstance(model, torch.jit.ScriptModule):
        return
    recorder = graph_capture.graph_recorder(model)
    if recorder is not None and not recorder.verified:
        capture_activations(model, inputs)


def _same(traced: Any, plain: Any) -> bool:
    """Whether the traced copy reproduced the model's own output (checked once per model)."""
    a, b = first_tensor(traced), first_tensor(plain)
    if a is None or b is None:
        return a is b
    # Half precision on a GPU may pick other kernels for the traced copy: compare at its precision.
    rtol, atol = (1e-4, 1e-5) if a.dtype == torch.float32 else (2e-2, 2e-2)
    # NaN where the model itself gives NaN (broken weights) is a faithful copy, not a reason for hooks.
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=rtol, atol=atol, equal_nan=True)
