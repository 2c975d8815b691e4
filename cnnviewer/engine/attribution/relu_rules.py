"""How guided backprop and DeconvNet pass gradients through every ReLU the forward pass runs.

A TorchFunctionMode intercepts each ReLU-like call (module ReLUs, functional
`F.relu`, in-place `relu_`, ReLU6 as `hardtanh(0, 6)`) instead of swapping
modules, so functional calls are caught too and the model is never changed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


class GuidedReLU:
    """Guided backprop: the ReLU's own backward (zero where the input was not positive),
    fed only the positive part of the incoming gradient by a hook on its output.

    A hook, not a Python autograd Function: the masking stays in torch's own
    backward, which keeps guided backprop as cheap as a plain backward pass.
    """

    @staticmethod
    def call(func, args, kwargs) -> Tensor:
        output = func(*args, **kwargs)
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(_positive)
        return output


def _positive(grad: Tensor) -> Tensor:
    return grad.clamp(min=0)


class _DeconvFunction(torch.autograd.Function):
    """ReLU whose backward is a ReLU of the backward signal (the forward input is ignored)."""

    @staticmethod
    def forward(ctx, x: Tensor, low: float, high: float) -> Tensor:
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad.clamp(min=0), None, None


class DeconvReLU:
    """DeconvNet: replace the ReLU by one whose backward ignores the forward input."""

    @staticmethod
    def call(func, args, kwargs, low: float = 0.0, high: float = float("inf")) -> Tensor:
        return _DeconvFunction.apply(args[0], low, high)


_RELU_FUNCTIONS = {torch.relu, torch.relu_, F.relu, torch.Tensor.relu, torch.Tensor.relu_}
_HARDTANH_FUNCTIONS = {F.hardtanh, F.relu6, torch._C._nn.hardtanh, torch._C._nn.hardtanh_}


class ReluRule(TorchFunctionMode):
    """Route every ReLU-like call through `rule` while active."""

    def __init__(self, rule) -> None:
        super().__init__()
        self.rule = rule
        self.seen = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_FUNCTIONS:
            self.seen += 1
            if self.rule is DeconvReLU:
                return DeconvReLU.call(func, args, kwargs)
            return self.rule.call(func, args, kwargs)
        if func in _HARDTANH_FUNCTIONS:
            low = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            high = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            if func is F.relu6:
                low, high = 0.0, 6.0
            if low == 0.0:   # ReLU6 and clipped ReLUs; a symmetric hardtanh is not a ReLU
                self.seen += 1
                if self.rule is DeconvReLU:
                    return DeconvReLU.call(func, args, kwargs, float(low), float(high))
                return self.rule.call(func, args, kwargs)
        return func(*args, **kwargs)
