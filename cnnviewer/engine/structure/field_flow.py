"""Receptive fields carried along a torch.fx graph, with the tensor layout each node has.

`summary_graph` applies the window arithmetic at convolutions and pools; this
module decides, for every other node, whether it keeps, joins or ends the field.
What a node does to the field is read from the graph (which axes hold H and W,
which operands broadcast), not from module names, so that modern blocks keep
their fields:

- Permutes and transposes move the spatial axes: a channel-last map (N, H, W, C)
  is tracked as such, and a Linear or LayerNorm over its last (channel) axis is
  a per-position operation (ConvNeXt's pointwise layers), as is any
  normalisation (layer, group, batch) and per-element activation.
- An element-wise operation with an operand broadcast over H and W (a squeeze-
  and-excitation gate x * sigmoid(fc(pool(x))), a layer-scale vector) keeps the
  field of the full-size operand. That operand is where the neuron's spatial
  detail comes from; the broadcast one adds per-channel context computed from
  the whole map, which the field marks as `context` instead of widening to
  "whole image".
- Reductions over H or W (global pooling, mean over the map), flattening them
  into one axis, and layers that mix positions (a Linear over a spatial axis)
  see the whole image.
- A resize (F.interpolate, nn.Upsample: a segmentation network's upsampling)
  divides the jump by its scale; each output position reads the input positions
  around its source coordinate c = (o + 0.5) / s - 0.5 (bilinear: floor(c) and
  floor(c) + 1, both within one step of c), so the field widens by that reach.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx

from cnnviewer.engine.structure.summary import Field

Axes = tuple[int, int]

_PERMUTES = {"permute"}
_TRANSPOSES = {"transpose", "swapaxes", "swapdims"}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "std", "var", "logsumexp", "nanmean", "prod"}
_RESHAPES = {"flatten", "view", "reshape", "unflatten", "unsqueeze", "squeeze", "view_as", "reshape_as"}
_GLOBAL_POOLS = {torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.adaptive_max_pool2d}
_ELEMENTWISE = {operator.add, operator.mul, operator.sub, operator.truediv, torch.add, torch.mul, torch.sub,
                torch.div, torch.where, torch.addcmul, "add", "mul", "sub", "div", "addcmul", "where", "add_", "mul_",
                "sub_", "div_", "addcmul_", "expand_as"}


RESIZE_FUNCTIONS = {"interpolate", "upsample", "upsample_bilinear", "upsample_nearest"}


# Products that contract over a token or spatial axis (attention): every position meets every other.
_MIXING = {torch.matmul, operator.matmul, torch.bmm, torch.einsum, torch.nn.functional.scaled_dot_product_attention,
           "matmul", "bmm", "__matmul__"}


def opaque(node: fx.Node) -> bool:
    """A function fx kept whole that is not torch's own (torchvision's swin window attention and
    patch merging): what it does to positions is unknown, so it ends the field, or one that mixes
    positions (matmul, einsum, attention)."""
    if node.target in _MIXING:
        return True
    if node.op != "call_function":
        return False
    module = getattr(node.target, "__module__", None) or ""
    return not (module in ("torch", "_operator", "operator", "builtins", "math")
                or module.startswith(("torch.", "torchvision.ops")))


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    """The full shape (batch included) ShapeProp recorded, None for non-tensors (tuples)."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def whole(rf: Field) -> Field:
    """The same geometry marked as seeing the whole image."""
    return Field(rf.size, rf.jump, rf.start, True, rf.context)


def name_of(node: fx.Node) -> str:
    """'permute', 'mean', 'linear'... for functions and methods alike."""
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", "")


def _dims(node: fx.Node, varargs: bool) -> list[int] | None:
    """The dims of permute (`varargs`: x.permute(0, 2, 3, 1) too) or of a reduction, None if absent."""
    value = node.kwargs.get("dim", node.kwargs.get("dims"))
    if value is None and len(node.args) > 1:
        value = node.args[1:] if varargs and isinstance(node.args[1], int) else node.args[1]
    values = value if isinstance(value, (tuple, list)) else [value]
    plain = value is not None and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    return list(values) if plain else None


def locate(in_shape: tuple[int, ...], axes: Axes, out_shape: tuple[int, ...]) -> Axes | None:
    """Where H and W went after a reshape: the adjacent pair of the same sizes with the same
    number of elements before it (so (N, C, H, W) -> (N, g, C/g, H, W) keeps them), else None."""
    height, width = in_shape[axes[0]], in_shape[axes[1]]
    if axes[1] != axes[0] + 1:
        return None
    before = math.prod(in_shape[:axes[0]])
    for i in range(len(out_shape) - 1):
        if out_shape[i] == height and out_shape[i + 1] == width and math.prod(out_shape[:i]) == before:
            return (i, i + 1)
    return None


def broadcast(shape: tuple[int, ...] | None, out_shape: tuple[int, ...] | None, axes: Axes | None) -> bool:
    """Whether an operand of `shape` is broadcast over the spatial axes of a larger result."""
    if shape is None or out_shape is None or axes is None or math.prod(out_shape[a] for a in axes) <= 1:
        return False
    offset = len(out_shape) - len(shape)
    return all((shape[a - offset] if a - offset >= 0 else 1) == 1 for a in axes)


def spread_constant(node: fx.Node) -> bool:
    """Whether a node resizes a 1x1 map: its output is the same per-channel values at every position."""
    if node.op != "call_function" or name_of(node) not in RESIZE_FUNCTIONS or not node.args:
        return False
    source = node.args[0]
    shape = shape_of(source) if isinstance(source, fx.Node) else None
    return shape is not None and len(shape) == 4 and shape[-2:] == (1, 1)


def merge(node: fx.Node, parents: list[fx.Node], fields: dict, layouts: dict) -> tuple[Field, Axes | None]:
    """The field of a node with several traced inputs: the union of the full-size ones.

    Operands broadcast over H and W (gates, scales) only add context, and so does a 1x1 map
    resized to full size (DeepLabV3's image-pooling branch, concatenated with the atrous ones),
    except that when every operand is such the union is taken as before.
    """
    out_shape = shape_of(node)
    first = parents[0]
    out_axes = _shifted(layouts.get(first), shape_of(first), out_shape)
    if opaque(node):
        rf = fields[first]
        for other in parents[1:]:
            rf = rf.union(fields[other])
        return whole(rf), None
    elementwise = node.target in _ELEMENTWISE
    spatial = [p for p in parents if not (elementwise and broadcast(shape_of(p), out_shape, out_axes))
               and not spread_constant(p)]
    context = [p for p in parents if p not in spatial]
    if not spatial:
        spatial, context = parents, []
    if spatial[0] is not first:
        out_axes = _shifted(layouts.get(spatial[0]), shape_of(spatial[0]), out_shape)
    rf = fields[spatial[0]]
    for other in spatial[1:]:
        rf = rf.union(fields[other])
    if context:
        rf = Field(rf.size, rf.jump, rf.start, rf.whole, True)
    return rf, out_axes


def _shifted(axes: Axes | None, shape: tuple[int, ...] | None, out_shape: tuple[int, ...] | None) -> Axes | None:
    """An operand's spatial axes as positions in a (broadcast) result."""
    if axes is None or shape is None or out_shape is None:
        return axes
    offset = len(out_shape) - len(shape)
    return (axes[0] + offset, axes[1] + offset)


# Input positions an output position may read, each side of its source coordinate, in input steps.
_RESIZE_REACH = {"nearest": 0.5, "nearest-exact": 0.5, "bilinear": 1.0, "linear": 1.0, "bicubic": 2.0}


def resize(rf: Field, in_size: tuple[int, int], out_size: tuple[int, int], mode: str,
           align_corners: bool | None) -> Field:
    """The field after resizing a (H, W) map to `out_size` (F.interpolate's coordinate rules).

    Output o's source coordinate is c = (o + 0.5) * in / out - 0.5 (align_corners: o * (in - 1) /
    (out - 1); nearest: o * in / out, read at floor), and it reads the positions within
    `_RESIZE_REACH[mode]` steps of c; 'area' is adaptive average pooling (whole map unless the
    sizes divide evenly).
    """
    if rf.whole:
        return rf
    if mode == "area":
        if any(n_out == 0 or n_in % n_out for n_in, n_out in zip(in_size, out_size)):
            return whole(rf)
        window = tuple(n_in // n_out for n_in, n_out in zip(in_size, out_size))
        return rf.through(window, window, (0, 0))
    size, jump, start = [], [], []
    for axis in range(2):
        n_in, n_out = in_size[axis], out_size[axis]
        step = rf.jump[axis]
        if align_corners and n_out > 1:
            ratio, offset = (n_in - 1) / (n_out - 1), 0.0
        elif mode == "nearest":
            ratio = n_in / n_out
            offset = -0.5   # floor(o * ratio) lies in (o * ratio - 1, o * ratio]
        else:
            ratio = n_in / n_out
            offset = 0.5 * ratio - 0.5
        reach = _RESIZE_REACH.get(mode, 2.0)
        jump.append(step * ratio)
        start.append(rf.start[axis] + offset * step)
        size.append(rf.size[axis] + 2 * reach * step)
    return Field(tuple(size), tuple(jump), tuple(start), rf.whole, rf.context)


def resize_options(node: fx.Node) -> tuple[str, bool | None]:
    """(mode, align_corners) of an F.interpolate call (its defaults: nearest, None)."""
    if name_of(node) == "upsample_bilinear":
        return "bilinear", True
    mode = node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
    align = node.kwargs.get("align_corners", node.args[4] if len(node.args) > 4 else None)
    return (mode if isinstance(mode, str) else "nearest"), (align if isinstance(align, bool) else None)


def through_function(node: fx.Node, rf: Field, axes: Axes | None,
                     in_shape: tuple[int, ...] | None) -> tuple[Field, Axes | None]:
    """A call_function / call_method node with one traced input: keep, move or end the field."""
    name, out_shape = name_of(node), shape_of(node)
    if opaque(node):
        return whole(rf), None
    if name == "softmax":
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        if axes is not None and in_shape is not None and isinstance(dim, int) and dim % len(in_shape) in axes:
            return whole(rf), None
    if axes is None or in_shape is None:
        return (whole(rf) if out_shape is not None and len(out_shape) < 3 else rf), axes
    if name in RESIZE_FUNCTIONS and out_shape is not None and axes == (len(in_shape) - 2, len(in_shape) - 1):
        mode, align = resize_options(node)
        return resize(rf, in_shape[-2:], out_shape[-2:], mode, align), axes
    if name in _PERMUTES:
        dims = [d % len(in_shape) for d in (_dims(node, True) or [])]
        if sorted(dims) == list(range(len(in_shape))):
            return rf, (dims.index(axes[0]), dims.index(axes[1]))
    if name in _TRANSPOSES and len(node.args) >= 3 and all(isinstance(a, int) for a in node.args[1:3]):
        a, b = (d % len(in_shape) for d in node.args[1:3])
        swap = {a: b, b: a}
        return rf, (swap.get(axes[0], axes[0]), swap.get(axes[1], axes[1]))
    if node.target in _GLOBAL_POOLS:    # functional adaptive pooling: only the identity keeps the field
        same = out_shape is not None and out_shape[-2:] == in_shape[-2:]
        return (rf if same else whole(rf)), axes
    if name in _REDUCTIONS:
        dims = _dims(node, False)
        if dims is None:
            return whole(rf), None
        dims = [d % len(in_shape) for d in dims]
        if set(dims) & set(axes):
            return whole(rf), None
        keep = node.kwargs.get("keepdim", len(node.args) > 2 and node.args[2] is True)
        if keep:
            return rf, axes
        return rf, tuple(a - sum(d < a for d in dims) for a in axes)
    if name == "linear":   # F.linear mixes the last axis only
        return (whole(rf), None) if len(in_shape) - 1 in axes else (rf, axes)
    if out_shape is None:       # a tuple (chunk, split): its items keep the layout
        return rf, axes
    if len(out_shape) < 3:
        return whole(rf), None
    if name in _RESHAPES or len(out_shape) != len(in_shape):
        moved = locate(in_shape, axes, out_shape)
        return (rf, moved) if moved is not None else (whole(rf), None)
    return rf, axes
