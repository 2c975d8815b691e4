"""torch.fx tracing that keeps library layers whole: a subclass of a standard layer (timm's
BatchNormAct2d, Conv2dSame, Linear) is one node, as are the modules timm itself marks untraceable.

fx's default tracer only treats modules defined in `torch.nn` as leaves, so it walks into
timm's subclasses: their parameters then vanish into functional calls (summary totals come out
short) and Conv2dSame's input-size-dependent padding stops the trace altogether.
"""

from __future__ import annotations

import sys

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


class LeafTracer(fx.Tracer):
    """fx.Tracer with library layers (and their subclasses) kept as single call_module nodes."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return super().is_leaf_module(m, module_qualified_name) or isinstance(m, LEAF_BASES) or _timm_notrace(m)


def trace(model: nn.Module) -> fx.GraphModule:
    """symbolic_trace with LeafTracer."""
    tracer = LeafTracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)
