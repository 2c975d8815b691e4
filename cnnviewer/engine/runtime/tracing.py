"""torch.fx tracing that keeps library layers whole: a subclass of a standard layer (timm's
BatchNormAct2d, Conv2dSame, Linear) is one node, as are the modules timm itself marks untraceable.

fx's default tracer only treats modules defined in `torch.nn` as leaves, so it walks into
timm's subclasses: their parameters then vanish into functional calls (summary totals come out
short) and Conv2dSame's input-size-dependent padding stops the trace altogether. Every tracer
here is a ConfinedTracer: a trace leaves other threads' model runs alone, one trace at a time.
"""

from __future__ import annotations

import sys
import threading

from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import (
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    _AvgPoolNd,
    _MaxPoolNd,
)

LEAF_BASES = (_ConvNd, nn.Linear, _BatchNorm, nn.GroupNorm, nn.LayerNorm, _MaxPoolNd, _AvgPoolNd,
              _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish,
              nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Mish, nn.PReLU, nn.Dropout,
              nn.Identity, nn.Flatten)


def _timm_notrace(module: nn.Module) -> bool:
    """timm's own 'do not trace into' registry, consulted only when timm is already imported."""
    if "timm" not in sys.modules:
        return False
    try:
        from timm.models._features_fx import is_notrace_module
    except ImportError:
        return False
    return bool(is_notrace_module(type(module)))


_TRACING = threading.RLock()   # one trace at a time in the process (see ConfinedTracer)


class ConfinedTracer(fx.Tracer):
    """fx.Tracer whose interception of module calls stays on its own thread, one trace at a time.

    While fx traces it patches `nn.Module.__call__` and `__getattr__` on the class, for the whole
    process: a model run meanwhile on another thread (the live detector, the job thread) went
    through this tracer and failed ("module is not installed as a submodule"). Other threads' calls
    now go straight to the module. Two traces overlapping on two threads restored each other's
    patches in the wrong order and left `nn.Module` patched for good (every later run failed), so
    traces also take turns.
    """

    _thread: int | None = None

    def trace(self, root, concrete_args=None):
        with _TRACING:
            self._thread = threading.get_ident()
            return super().trace(root, concrete_args)

    def call_module(self, m: nn.Module, forward, args: tuple, kwargs: dict):
        if threading.get_ident() != self._thread:   # another thread's model run: not part of this trace
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val, parameter_proxy_cache: dict):
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


class LeafTracer(ConfinedTracer):
    """ConfinedTracer with library layers (and their subclasses) kept as single call_module nodes."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return super().is_leaf_module(m, module_qualified_name) or isinstance(m, LEAF_BASES) or _timm_notrace(m)


def trace(model: nn.Module) -> fx.GraphModule:
    """symbolic_trace with LeafTracer."""
    tracer = LeafTracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)
