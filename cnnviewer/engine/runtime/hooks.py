"""Record every module's output during a forward pass, safely.

The fast path is a torch.fx rewrite (graph_capture); hooks are the fallback
for models torch.fx cannot trace.

Hooks live only inside a `with`, so an exception or a cancel never leaves one
behind. In-place operations (ReLU(inplace=True), ResNet's `out += identity`)
would silently overwrite a recorded tensor; the recorder detects that through
tensor version counters on the first pass for a model and from then on clones
exactly those outputs, so the common case costs no copies.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.types import LayerId

log = logging.getLogger(__name__)

# Per model: names of modules whose outputs get modified in place later in the
# forward pass and therefore must be cloned when recorded.
_clone_sets: weakref.WeakKeyDictionary[nn.Module, frozenset[str]] = weakref.WeakKeyDictionary()


def first_tensor(output: Any) -> Tensor | None:
    """The tensor a module 'produces': itself, or the first one in a tuple/list/dict."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    # torchvision's GoogLeNetOutputs / InceptionOutputs are namedtuples: covered above.
    return None


@contextmanager
def record_outputs(model: nn.Module, layers: Iterable[LayerId] | None = None,
                   clone: Iterable[LayerId] = (),
                   versions: dict[LayerId, int] | None = None) -> Iterator[dict[LayerId, Tensor]]:
    """Record the outputs of `layers` (default: every named module) while inside.

    Args:
        model: the network; left with no hooks when the block exits.
        layers: dotted `named_modules()` names; None records all, the root as ''.
        clone: names whose outputs are copied when recorded (see module doc).
        versions: if given, filled with each tensor's version counter at record
            time (not available under inference_mode).

    Yields:
        A dict filled during forward passes: name -> detached output tensor.
    """
    modules = dict(model.named_modules())
    names = list(modules) if layers is None else list(layers)
    to_clone = frozenset(clone)
    out: dict[LayerId, Tensor] = {}

    def make_hook(name: LayerId, copy: bool):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = first_tensor(output)
            if tensor is not None:
                tensor = tensor.detach()
                out[name] = tensor.clone() if copy else tensor
                if versions is not None:
                    versions[name] = tensor._version
        return hook

    with ExitStack() as stack:
        for name in names:
            handle = modules[name].register_forward_hook(make_hook(name, name in to_clone))
            stack.callback(handle.remove)
        yield out


def _versions(recorded: dict[LayerId, Tensor]) -> dict[LayerId, int]:
    return {name: tensor._version for name, tensor in recorded.items()}


def capture_activations(model: nn.Module, inputs: Tensor) -> tuple[Any, dict[LayerId, Tensor]]:
    """Run one forward pass and return (model output, every module's output).

    Uses the model's torch.fx recorder when it traces (no hooks, no clones; see
    graph_capture), else forward hooks. Gradients are off and every module's
    training flag is restored.
    """
    from cnnviewer.engine.runtime import graph_capture

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
    from cnnviewer.engine.runtime import graph_capture

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
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=rtol, atol=atol)


def capture_with_hooks(model: nn.Module, inputs: Tensor) -> tuple[Any, dict[LayerId, Tensor]]:
    """Record every module's output with forward hooks (for models torch.fx cannot trace).

    The first call for a model runs a probe pass under `no_grad` (inference
    tensors have no version counter) to learn which outputs are later modified
    in place; those are cloned from then on.
    """
    clone = _clone_sets.get(model)
    if clone is None:
        seen: dict[LayerId, int] = {}
        with torch.no_grad(), record_outputs(model, versions=seen) as probe:
            model(inputs)
        clone = frozenset(name for name, tensor in probe.items() if tensor._version != seen[name])
        _clone_sets[model] = clone
    with torch.inference_mode(), record_outputs(model, clone=clone) as recorded:
        output = model(inputs)
    return output, recorded


@contextmanager
def leaf_hooks(model: nn.Module, hook_for: Callable[[LayerId], Callable[..., None]]) -> Iterator[None]:
    """Install `hook_for(name)` as the forward hook of every leaf module while inside."""
    with ExitStack() as stack:
        for name, module in model.named_modules():
            if next(module.children(), None) is None:
                stack.enter_context(module.register_forward_hook(hook_for(name)))
        yield


def has_hooks(model: nn.Module) -> bool:
    """True if any module still carries a forward or backward hook (for tests)."""
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
               for m in model.modules())
