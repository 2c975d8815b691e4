"""The theoretical receptive field of one pixel of a class map (issue 25: the clicked output pixel).

A class map is the last feature map put through a 1×1 head (a classifier run fully convolutionally)
or, in a segmentation network, a stride-8/16 map upsampled bilinearly to the input (FCN, DeepLabV3,
LR-ASPP), often the sum of branches at different strides. The summary's field arithmetic
(`summary.Field`) follows one chain of sliding windows; it does not know bilinear upsampling,
whose output pixel reads up to 4 map positions. So the field is found here the other way round:
the pixel's range is carried backwards through the traced graph (torch.fx), node by node - a
convolution or pooling widens it by its kernel, an interpolation maps it to the source positions
whose weight is not zero, an element-wise op or a merge (add, concat, multiply) hands it to every
input of the same size - and clipped to each map at every step. What reaches the input is the box.

Global pooling (squeeze-and-excitation gates, ASPP's image pooling, LR-ASPP's scale branch) feeds
every pixel a value from the whole image: `context` says so, and the box is the field with those
gates held fixed (as `summary.Field.context`). Job thread only.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from cnnviewer.engine.runtime.modes import eval_mode

Range = list[int]       # [y0, y1, x0, x1], half-open, in a node's map positions


@dataclass(frozen=True)
class PixelField:
    """The field of output pixel `pixel` of an `output_hw` class map computed from an `input_hw` input.

    box: (top, left, bottom, right) in input pixels, half-open, inside the input (what the pixel can
    see; the zero padding beyond the edge is not counted). context: global pooling also feeds it.
    """

    pixel: tuple[int, int]
    output_hw: tuple[int, int]
    input_hw: tuple[int, int]
    box: tuple[int, int, int, int]
    context: bool


@dataclass(frozen=True, eq=False)
class _Graph:
    graph: fx.GraphModule
    shapes: dict[fx.Node, tuple[int, ...]]     # every node with a tensor output: its first tensor's shape
    dependent: set[fx.Node]                    # nodes computed from the input (not constants)
    output: fx.Node                            # the class map's node


_GRAPHS: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def _first_tensor_meta(meta):
    if hasattr(meta, "shape") and not isinstance(meta, torch.Size):
        return tuple(meta.shape)
    if isinstance(meta, (tuple, list)):
        for item in meta:
            found = _first_tensor_meta(item)
            if found is not None:
                return found
    if isinstance(meta, dict):
        for item in meta.values():
            found = _first_tensor_meta(item)
            if found is not None:
                return found
    return None


def _output_node(graph: fx.Graph) -> fx.Node:
    out = next(node for node in graph.nodes if node.op == "output").args[0]
    while not isinstance(out, fx.Node):
        if isinstance(out, dict):
            out = out.get("out", next(iter(out.values())))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        else:
            raise ValueError("the model's output is not a tensor")
    return out


def _graph(model: nn.Module, channels: int, input_hw: tuple[int, int]) -> _Graph:
    """The traced graph with every node's shape at this input size (one forward of zeros; cached)."""
    from torch.fx.passes.shape_prop import ShapeProp

    from cnnviewer.engine.runtime.tracing import trace

    key = (channels, *input_hw)
    cached = _GRAPHS.setdefault(model, {})
    if key in cached:
        return cached[key]
    first = next(iter((*model.parameters(), *model.buffers())), None)
    device, dtype = (first.device, first.dtype) if first is not None else (torch.device("cpu"), torch.float32)
    with eval_mode(model), torch.no_grad():
        traced = trace(model)
        ShapeProp(traced).propagate(torch.zeros(1, channels, *input_hw, device=device, dtype=dtype))
    shapes, dependent = {}, set()
    for node in traced.graph.nodes:
        shape = _first_tensor_meta(node.meta.get("tensor_meta"))
        if shape is not None:
            shapes[node] = shape
        if node.op == "placeholder" or any(arg in dependent for arg in node.all_input_nodes):
            dependent.add(node)
    found = _Graph(traced, shapes, dependent, _output_node(traced.graph))
    cached.clear()          # one input size per model is kept
    cached[key] = found
    return found


def _pair(value, default) -> tuple[int, int]:
    value = default if value is None else value
    return (int(value), int(value)) if isinstance(value, (int, float)) else (int(value[0]), int(value[1]))


def _window(out: tuple[int, int], size: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """Input positions a sliding window's outputs [a, b) read."""
    a, b = out
    return max(0, a * stride - padding), min(size, (b - 1) * stride - padding + dilation * (kernel - 1) + 1)


def _transposed(out: tuple[int, int], size: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """Input positions a transposed convolution's outputs [a, b) read: o = i·s − p + j·d, j < k."""
    a, b = out
    return max(0, math.ceil((a + padding - dilation * (kernel - 1)) / stride)), min(size, (b - 1 + padding) // stride + 1)


def _interpolated(out: tuple[int, int], size: int, out_size: int, mode: str, align_corners: bool | None,
                  scale: float | None) -> tuple[int, int]:
    """Source positions with a non-zero weight in the interpolated outputs [a, b) (PyTorch's
    coordinate rules: upsample_bilinear2d / nearest)."""
    dst = np.arange(out[0], out[1], dtype=np.float64)
    ratio = (1.0 / scale) if scale else size / out_size
    if mode in ("nearest", "nearest-exact"):
        src = np.floor((dst + (0.5 if mode == "nearest-exact" else 0.0)) * ratio)
        low = high = np.minimum(src, size - 1)
    else:
        if align_corners:
            src = dst * ((size - 1) / (out_size - 1) if out_size > 1 else 0.0)
        else:
            src = np.maximum((dst + 0.5) * ratio - 0.5, 0.0)
        base = np.floor(src)
        if mode == "bicubic":
            low, high = base - 1, base + 2
        else:
            low, high = base, np.where(src > base, base + 1, base)
    return max(0, int(low.min())), min(size, int(high.max()) + 1)


def _arg(node: fx.Node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _interpolation(node: fx.Node, module: nn.Module | None):
    """(mode, align_corners, scale_factor) of an interpolation node, else None."""
    if isinstance(module, nn.Upsample):
        scale = module.scale_factor
        return module.mode, module.align_corners, (scale if isinstance(scale, (int, float)) else None)
    if node.op == "call_function" and node.target in (F.interpolate, F.upsample, F.upsample_bilinear,
                                                      F.upsample_nearest):
        mode = _arg(node, 3, "mode", "bilinear" if node.target is F.upsample_bilinear else "nearest")
        align = _arg(node, 4, "align_corners", True if node.target is F.upsample_bilinear else None)
        scale = _arg(node, 2, "scale_factor")
        recompute = _arg(node, 5, "recompute_scale_factor")
        return mode, align, (scale if isinstance(scale, (int, float)) and not recompute else None)
    return None


def output_pixel_field(model: nn.Module, summary, pixel_yx: tuple[int, int], output_hw: tuple[int, int],
                       input_hw: tuple[int, int] | None = None) -> PixelField:
    """The input box output pixel `pixel_yx` of the model's (K, h, w) class map can see (module docstring).

    `summary` (structure.summary.Summary) gives the input size and channels when `input_hw` is None.
    Raises ValueError when the model's output at that size is not an `output_hw` map.
    """
    channels = summary.input_shape[0] if summary is not None else 3
    input_hw = tuple(input_hw) if input_hw is not None else tuple(summary.input_shape[1:])
    found = _graph(model, channels, input_hw)
    shape = found.shapes.get(found.output)
    if shape is None or len(shape) != 4 or tuple(shape[-2:]) != tuple(output_hw):
        raise ValueError(f"the model's output at {input_hw[0]}×{input_hw[1]} is {shape}, not a class map of "
                         f"{output_hw[0]}×{output_hw[1]}")
    y, x = (min(max(int(v), 0), n - 1) for v, n in zip(pixel_yx, output_hw))
    modules = dict(found.graph.named_modules())
    ranges: dict[fx.Node, Range] = {found.output: [y, y + 1, x, x + 1]}
    context = False
    box: Range | None = None

    def reach(node: fx.Node, extent: Range) -> None:
        old = ranges.get(node)
        ranges[node] = extent if old is None else [min(old[0], extent[0]), max(old[1], extent[1]),
                                                   min(old[2], extent[2]), max(old[3], extent[3])]

    for node in reversed(list(found.graph.graph.nodes)):
        extent = ranges.get(node)
        if extent is None:
            continue
        if node.op == "placeholder":
            box = extent if box is None else [min(box[0], extent[0]), max(box[1], extent[1]),
                                              min(box[2], extent[2]), max(box[3], extent[3])]
            continue
        inputs = [arg for arg in node.all_input_nodes if arg in found.dependent and len(found.shapes.get(arg, ())) == 4]
        out_shape = found.shapes.get(node)
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        for source in inputs:
            height, width = found.shapes[source][-2:]
            if (height, width) == (1, 1) and out_shape is not None and tuple(out_shape[-2:]) != (1, 1):
                context = True          # a whole-image gate broadcast over the map
                continue
            if out_shape is None or len(out_shape) != 4:
                reach(source, [0, height, 0, width])      # not a map (a tuple's item): the whole source
                continue
            axes = list(zip((extent[0], extent[2]), (extent[1], extent[3]), (height, width), out_shape[-2:]))
            spans = _spans(node, module, source, axes)
            if spans is None:
                context = True          # global pooling: the pooled value comes from the whole map
                continue
            reach(source, [spans[0][0], spans[0][1], spans[1][0], spans[1][1]])
    if box is None:
        raise ValueError("the output pixel does not depend on the input through maps the graph shows")
    return PixelField((y, x), tuple(output_hw), input_hw, (box[0], box[2], box[1], box[3]), context)


def _spans(node: fx.Node, module: nn.Module | None, source: fx.Node, axes) -> list[tuple[int, int]] | None:
    """The source positions each axis's output range reads; None for a global pooling."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.ConvTranspose2d)):
        kernel, stride = _pair(module.kernel_size, 1), _pair(module.stride, module.kernel_size)
        padding = _pair(module.padding, 0) if not isinstance(module.padding, str) else None
        dilation = _pair(getattr(module, "dilation", 1), 1)
        if padding is None:      # 'same': centred
            padding = tuple(dilation[i] * (kernel[i] - 1) // 2 for i in range(2))
        step = _transposed if isinstance(module, nn.ConvTranspose2d) else _window
        return [step((a, b), size, kernel[i], stride[i], padding[i], dilation[i])
                for i, (a, b, size, _out) in enumerate(axes)]
    target = getattr(node.target, "__name__", str(node.target))
    if node.op == "call_function" and target in ("conv2d", "max_pool2d", "avg_pool2d") and source is node.args[0]:
        if target == "conv2d":
            weight = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
            kernel = tuple(weight.meta["tensor_meta"].shape[-2:])
            stride, padding, dilation = (_pair(_arg(node, i, name), d) for i, name, d in
                                         ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1)))
        else:
            kernel = _pair(_arg(node, 1, "kernel_size"), 1)
            stride = _pair(_arg(node, 2, "stride") or kernel, 1)
            padding = _pair(_arg(node, 3, "padding"), 0)
            dilation = _pair(_arg(node, 4, "dilation"), 1) if target == "max_pool2d" else (1, 1)
        return [_window((a, b), size, kernel[i], stride[i], padding[i], dilation[i])
                for i, (a, b, size, _out) in enumerate(axes)]
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or target in (
            "adaptive_avg_pool2d", "adaptive_max_pool2d"):
        if all(out == 1 for *_ab, _size, out in axes):
            return None
        return [(a * size // out, min(size, -(-b * size // out))) for a, b, size, out in axes]
    interpolation = _interpolation(node, module)
    if interpolation is not None:
        mode, align, scale = interpolation
        return [_interpolated((a, b), size, out, mode, align, scale) for a, b, size, out in axes]
    if target == "mean" and all(out == 1 for *_ab, _size, out in axes):
        return None
    if all(size == out for _a, _b, size, out in axes):
        return [(a, b) for a, b, _size, _out in axes]      # element-wise, a merge of equal maps, a 1×1 head
    return [(0, size) for _a, _b, size, _out in axes]      # an operation not modelled here: all of it
