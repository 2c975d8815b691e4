"""Record every module's output with forward hooks: the fallback for models torch.fx cannot trace.

Hooks live only inside a `with`, so an exception or a cancel never leaves one
behind. In-place operations (ReLU(inplace=True), ResNet's `out += identity`)
would silently overwrite a recorded tensor; the recorder detects that through
tensor version counters on the first pass for a model and from then on clones
exactly those outputs, so the common case costs no copies.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.types import LayerId

# Per model: names of modules whose outputs get modified in place later in the
# forward pass and therefore must be cloned when recorded.
_clone_sets: weakref.WeakKeyDictionary[nn.Module, frozenset[str]] = weakref.WeakKeyDictionary()


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
