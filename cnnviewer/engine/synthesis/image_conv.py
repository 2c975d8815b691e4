"""The image's own convolution with a faster input gradient, for synthesis on the CPU.

Synthesis needs ∂f/∂image, so the first convolution's backward must produce its input's gradient.
For a convolution that reads few channels (the image's 3) with a stride, oneDNN's backward-data
kernel is slow: ResNet-18's 7×7 stride-2 conv1 took 7.9 ms per step, 4.5× its forward. The same
gradient is one matrix product (Wᵀ·∂f/∂y: C·k·k × L) and a fold (col2im): about 3.8 ms. Equal up
to float rounding; the weight's gradient is never needed (synthesis freezes the model).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ImageConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.geometry = (tuple(x.shape[-2:]), stride, padding, dilation)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (weight,) = ctx.saved_tensors
        size, stride, padding, dilation = ctx.geometry
        columns = weight.reshape(weight.shape[0], -1).t() @ grad.reshape(grad.shape[0], weight.shape[0], -1)
        grad_input = F.fold(columns, size, weight.shape[-2:], dilation=dilation, padding=padding, stride=stride)
        return grad_input, None, None, None, None, None


class ImageConv(nn.Conv2d):
    """nn.Conv2d whose input gradient is the product and fold above (frozen weights only)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad):
            return super().forward(x)
        return _ImageConvFunction.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


def suits(conv: nn.Module) -> bool:
    """A plain strided conv on few channels: where the product-and-fold gradient is faster."""
    return (type(conv) is nn.Conv2d and conv.in_channels <= 4 and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and max(conv.stride) > 1 and conv.weight.device.type == "cpu")


def image_conv(conv: nn.Conv2d) -> ImageConv:
    """A copy of `conv` (sharing its parameters) with the faster input gradient."""
    clone = copy.copy(conv)
    clone.__class__ = ImageConv
    return clone
