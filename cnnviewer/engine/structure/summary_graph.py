"""The torch side of the model summary: tracing, shapes, MACs, receptive fields.

See `summary` for the method; this module runs on the job thread.
"""

from __future__ import annotations

import dataclasses
import math
import operator

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils.flop_counter import FlopCounterMode

from cnnviewer.engine.errors import ModelError
from cnnviewer.engine.runtime.hooks import leaf_hooks
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.tracing import trace
from cnnviewer.engine.structure.field_flow import (
    RESIZE_FUNCTIONS,
    merge,
    name_of,
    resize,
    resize_options,
    shape_of,
    through_function,
    whole,
)
from cnnviewer.engine.structure.layers import first_conv
from cnnviewer.engine.structure.summary import Field, LayerRow, Summary
from cnnviewer.engine.types import LayerId


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


SAME_PADDING_TYPES = ("Conv2dSame", "StdConv2dSame", "ScaledStdConv2dSame", "MaxPool2dSame", "AvgPool2dSame")


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    """The left/top padding of TensorFlow's 'SAME' (timm's pad_same): it depends on the input size,
    and any odd extra pixel goes to the right/bottom, so only the left part moves the field."""
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2


def _window(module: nn.Module, in_shape: tuple[int, ...] = ()) -> dict | None:
    """kernel/stride/padding/dilation of a sliding-window module, None for others.

    `in_shape` (C, H, W) is needed for timm's TF-'SAME' layers, whose padding follows the input.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        dilation = _pair(getattr(module, "dilation", 1))
        if type(module).__name__ in SAME_PADDING_TYPES and len(in_shape) >= 2:
            padding = tuple(_same_padding(size, k, s, d)
                            for size, k, s, d in zip(in_shape[-2:], kernel, stride, dilation))
        elif isinstance(module.padding, str):
            padding = tuple(((d * (k - 1)) // 2) for k, d in zip(kernel, dilation))
        else:
            padding = _pair(module.padding)
        hyper = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation}
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            hyper["groups"] = module.groups
        if isinstance(module, nn.ConvTranspose2d):
            hyper["transposed"] = True
        return hyper
    return None


def _apply(rf: Field, hyper: dict) -> Field:
    """The field after a window module (transposed convolutions spread instead of gather)."""
    move = rf.through_transposed if hyper.get("transposed") else rf.through
    return move(hyper["kernel"], hyper["stride"], hyper["padding"], hyper["dilation"])


def _adaptive_window(in_size: tuple[int, int], out_size: tuple[int, int]) -> dict | None:
    """Adaptive pooling as a fixed window where the sizes divide evenly (always for global)."""
    if any(o == 0 or i % o for i, o in zip(in_size, out_size)):
        return None
    stride = tuple(i // o for i, o in zip(in_size, out_size))
    return {"kernel": stride, "stride": stride, "padding": (0, 0), "dilation": (1, 1)}


def _spatial(shape: tuple[int, ...]) -> tuple[int, int] | None:
    return tuple(shape[-2:]) if len(shape) == 4 else None


def _module_macs(model: nn.Module, inputs: torch.Tensor) -> dict[str, int]:
    """MACs per module name, from torch's FlopCounterMode (FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(inputs)
    macs = {}
    for qualified, counts in counter.get_flop_counts().items():
        name = qualified.split(".", 1)[1] if "." in qualified else ""
        macs[name] = int(sum(counts.values()) // 2)
    return macs


def _params(module: nn.Module) -> tuple[int, int]:
    """(weights, biases) directly owned by a module."""
    weights = biases = 0
    for name, parameter in module.named_parameters(recurse=False):
        if name.endswith("bias"):
            biases += parameter.numel()
        else:
            weights += parameter.numel()
    return weights, biases


def _row(name: str, module: nn.Module, shape: tuple[int, ...], macs: dict[str, int], rf: Field,
         hyper: dict) -> LayerRow:
    weights, biases = _params(module)
    return LayerRow(name=name, type=type(module).__name__, output_shape=shape,
                    units=math.prod(shape) if shape else 0, params=weights, bias_params=biases,
                    macs=macs.get(name, 0), rf_size=rf.size, rf_jump=rf.jump, rf_start=rf.start,
                    rf_whole=rf.whole, hyper=hyper, rf_context=rf.context)


def _through_module(module: nn.Module, rf: Field, axes, in_shape: tuple[int, ...], shape: tuple[int, ...]):
    """(field, spatial axes, hyper) after a leaf module; `in_shape`/`shape` without batch."""
    hyper = _window(module, in_shape)
    if isinstance(module, nn.Upsample) and axes == (len(shape) - 1, len(shape)) and len(in_shape) >= 2:
        mode, align = module.mode, module.align_corners
        return resize(rf, in_shape[-2:], shape[-2:], mode, align), axes, {"mode": mode}
    if hyper is None and isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        hyper = _adaptive_window(_spatial((1, *in_shape)) or (1, 1), _spatial((1, *shape)) or (1, 1))
        if shape and _spatial((1, *shape)) == (1, 1):
            rf, hyper = whole(rf), None
    if hyper is not None and not rf.whole:
        rf, axes = _apply(rf, hyper), (len(shape) - 1, len(shape))
    if isinstance(module, nn.Linear) and axes is not None and len(shape) not in axes:
        return rf, axes, hyper    # over the channels of a channel-last map: a 1x1 convolution
    if isinstance(module, (nn.Linear, nn.Flatten)) or len(shape) < 3 or axes is None:
        return whole(rf), None, hyper
    return rf, axes, hyper


def _summarize_graph(model: nn.Module, inputs: torch.Tensor, macs: dict[str, int]) -> tuple[
        list[LayerRow], dict[LayerId, Field], LayerId | None, frozenset, dict[str, tuple[int, ...]]]:
    """Rows, every module's field, the last module with maps before pooling, channel-last modules,
    the shapes of function and method nodes."""
    graph_module = trace(model)
    with torch.no_grad():
        ShapeProp(graph_module).propagate(inputs)
    modules = dict(model.named_modules())
    fields: dict[fx.Node, Field] = {}
    layouts: dict[fx.Node, tuple[int, int] | None] = {}   # positions of H and W, batch included
    rows: dict[str, LayerRow] = {}   # a module called twice keeps its first place, its last call's field
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            fields[node] = Field()
            layouts[node] = (2, 3) if len(shape_of(node) or ()) == 4 else None
            continue
        parents = [arg for arg in node.all_input_nodes if arg in fields]
        if node.op == "call_function" and name_of(node) in RESIZE_FUNCTIONS and node.args and node.args[0] in fields:
            parents = [node.args[0]]   # the size argument (read off a shape) carries no field
        full = shape_of(node)
        shape = full[1:] if full is not None else ()
        if node.op == "call_module" and not parents:   # applied to a constant: listed, but no field
            rows[str(node.target)] = _row(str(node.target), modules[node.target], shape, macs, Field(), {})
        if node.op in ("get_attr", "output") or not parents:
            continue     # parameters and constants (a layer scale) carry no field
        in_full = shape_of(parents[0])
        in_shape = in_full[1:] if in_full is not None else ()
        if len(parents) > 1:
            rf, axes = merge(node, parents, fields, layouts)
            if full is not None and len(full) < 3:
                rf, axes = whole(rf), None
        elif node.op == "call_module":
            rf, axes, hyper = _through_module(modules[node.target], fields[parents[0]], layouts[parents[0]],
                                              in_shape, shape)
        else:
            rf, axes = through_function(node, fields[parents[0]], layouts[parents[0]], in_full)
        if node.op == "call_module":
            module = modules[node.target]
            hyper = _window(module, in_shape) if len(parents) > 1 else hyper
            rows[str(node.target)] = _row(str(node.target), module, shape, macs, rf, hyper or {})
        elif (owner := _resize_owner(node, modules)) is not None:
            rows[owner] = _row(owner, modules[owner], shape, macs, rf, {"mode": resize_options(node)[0]})
        fields[node], layouts[node] = rf, axes
    node_shapes = {node.name: shape_of(node)[1:] for node in graph_module.graph.nodes
                   if node.op in ("call_function", "call_method") and shape_of(node)}
    return (*_per_module(graph_module, rows, fields, layouts), node_shapes)


def _resize_owner(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The module an F.interpolate call is all of (a parameterless upsampling module without
    children, such as segmentation.models.Upsample), so it gets a summary row like a layer; None
    for a resize inside a bigger module's forward (the architecture graph shows those)."""
    if node.op != "call_function" or name_of(node) not in RESIZE_FUNCTIONS:
        return None
    stack = [path.split("@")[0] for path in (node.meta.get("nn_module_stack") or {})]
    owner = stack[-1] if stack else ""
    module = modules.get(owner)
    if not owner or module is None or next(module.children(), None) is not None:
        return None
    return owner if next(module.parameters(recurse=False), None) is None else None


_PASS_THROUGH = (nn.Identity, nn.Dropout)


def _resized(node: fx.Node) -> bool:
    return node.op == "call_function" and name_of(node) in RESIZE_FUNCTIONS and isinstance(node.args[0], fx.Node)


def _classified_map(graph_module: fx.GraphModule, node: fx.Node | None) -> fx.Node | None:
    """For a segmentation network, whose output is its class scores upsampled: the feature map its
    1x1 classifier reads, the counterpart of what a classifier's global pooling reads (so Grad-CAM's
    default layer is a feature layer, not the class map). Walks back through the upsampling,
    pass-through layers, the 1x1 convolution (of two summed, as in LR-ASPP, the one reading more
    channels), and a gate's multiplication. None when the output is not an upsampled class map."""
    if node is None or not _resized(node):
        return None
    node, classified = node.args[0], False
    for _ in range(16):
        module = graph_module.get_submodule(node.target) if node.op == "call_module" else None
        if _resized(node) or isinstance(module, _PASS_THROUGH):
            node = node.all_input_nodes[0] if not _resized(node) else node.args[0]
        elif not classified and isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
            node, classified = node.all_input_nodes[0], True
        elif not classified and node.target in (operator.add, torch.add) and all(
                parent.op == "call_module" and isinstance(graph_module.get_submodule(parent.target), nn.Conv2d)
                for parent in node.all_input_nodes):
            node = max(node.all_input_nodes, key=lambda parent: graph_module.get_submodule(parent.target).in_channels)
        elif classified and node.target in (operator.mul, torch.mul) and len(node.all_input_nodes) == 2:
            full = max(node.all_input_nodes, key=lambda parent: math.prod((shape_of(parent) or (0,))[-2:]))
            node = full     # a gate (x * sigmoid(pool(x))): the map it scales
        else:
            break
    return node if classified else None


def _per_module(graph_module: fx.GraphModule, rows: dict[str, LayerRow], fields: dict[fx.Node, Field],
                layouts: dict) -> tuple[list[LayerRow], dict[LayerId, Field], LayerId | None, frozenset]:
    """Every module's field (a container's is its last node's), and which output is the final map:
    the last node with spatial maps that global pooling, a flatten or the model's output reads."""
    last: dict[LayerId, fx.Node] = {}
    for node in graph_module.graph.nodes:
        if node not in fields:
            continue
        for path in node.meta.get("nn_module_stack") or {}:
            last[path.split("@")[0]] = node
        if node.op == "call_module":
            last[str(node.target)] = node
    by_module = {name: fields[node] for name, node in last.items()}
    by_module.update({name: Field(row.rf_size, row.rf_jump, row.rf_start, row.rf_whole, row.rf_context)
                      for name, row in rows.items()})

    def spatial(node: fx.Node) -> bool:
        full, axes = shape_of(node), layouts.get(node)
        return (node in fields and not fields[node].whole and full is not None and axes is not None
                and full[axes[0]] * full[axes[1]] > 1)

    final = None
    for node in graph_module.graph.nodes:
        if spatial(node) and any(user.op == "output" or (user in fields and fields[user].whole)
                                 for user in node.users):
            final = node
    while final is not None and final.op == "call_module" and isinstance(
            graph_module.get_submodule(final.target), _PASS_THROUGH) and final.all_input_nodes:
        final = final.all_input_nodes[0]     # a trailing Identity (timm's norm_pre) names no layer
    owners = [name for name, node in last.items() if node is final and name]
    head_input = _classified_map(graph_module, final)
    owners = [name for name, node in last.items() if node is head_input and name] or owners
    final_map = max(owners, key=lambda name: name.count("."), default=None)
    channels_last = frozenset(name for name, node in last.items()
                              if len(shape_of(node) or ()) == 4 and layouts.get(node) == (1, 2))
    return list(rows.values()), by_module, final_map, channels_last


def _summarize_hooks(model: nn.Module, inputs: torch.Tensor, macs: dict[str, int]) -> list[LayerRow]:
    """Leaf modules in execution order, fields composed as if they formed a chain.

    A module that reads a spatial map after a 1x1 branch (a squeeze-and-excitation gate's pool
    and FCs) continues from the last map's field, marked as context, rather than 'whole image'.
    """
    order: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []
    def hook_for(name: str):
        def hook(mod, args, output):
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
            in_shape = tuple(args[0].shape[1:]) if args and isinstance(args[0], torch.Tensor) else ()
            order.append((name, mod, shape, in_shape))
        return hook

    with leaf_hooks(model, hook_for), torch.no_grad():
        model(inputs)
    rf, last_map, rows, seen = Field(), Field(), [], set()
    for name, module, shape, in_shape in order:
        if rf.whole and len(in_shape) == 3 and math.prod(in_shape[-2:]) > 1:
            rf = Field(last_map.size, last_map.jump, last_map.start, False, True)
        hyper = _window(module, in_shape) or {}
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and shape[-2:] == (1, 1):
            rf = Field(rf.size, rf.jump, rf.start, True)
        elif hyper and not rf.whole:
            rf = _apply(rf, hyper)
        if isinstance(module, nn.Linear) or len(shape) < 3:
            rf = Field(rf.size, rf.jump, rf.start, True)
        if len(shape) == 3 and math.prod(shape[-2:]) > 1 and not rf.whole:
            last_map = rf
        if name not in seen:
            seen.add(name)
            rows.append(_row(name, module, shape, macs, rf, hyper))
    return rows


def _with_parameter_owners(model: nn.Module, rows: list[LayerRow]) -> list[LayerRow]:
    """Rows for modules that own parameters directly but are not layers themselves (ConvNeXt's
    layer-scale `gamma`, a class token): placed after their last layer, so totals are complete."""
    listed = {row.name for row in rows}
    result = list(rows)
    for name, module in model.named_modules():
        if name in listed or not any(True for _ in module.parameters(recurse=False)):
            continue
        weights, biases = _params(module)
        inside = [i for i, row in enumerate(result) if row.name.startswith(f"{name}.") or not name]
        at = inside[-1] + 1 if inside else len(result)
        owner = LayerRow(name, type(module).__name__, (), 0, weights, biases, 0, (1.0, 1.0), (1.0, 1.0),
                         (0.5, 0.5), False)
        if at:   # shaped and placed like its last layer, whose output it scales or adds to
            owner = dataclasses.replace(result[at - 1], name=name, type=owner.type, units=0, params=weights,
                                        bias_params=biases, macs=0, hyper={})
        result.insert(at, owner)
    return result


def summarize(model: nn.Module, input_size: tuple[int, int] = (224, 224), *, name: str = "",
              channels: int = 3) -> Summary:
    """Summarise every leaf layer of `model` for a (1, channels, H, W) input.

    The model's training flags are restored; gradients are off.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError("a TorchScript model is compiled code: its layers cannot be traced or recorded, "
                         "so only its predictions (and input gradients) can be shown; load it as a state dict "
                         "to see inside")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    first = first_conv(model)
    channels = first[1].in_channels if first is not None and channels == 3 else channels
    inputs = torch.zeros(1, channels, *input_size, device=device, dtype=dtype)
    with eval_mode(model):
        macs = _module_macs(model, inputs)
        try:
            rows, fields, final_map, channels_last, node_shapes = _summarize_graph(model, inputs, macs)
            method = "torch.fx"
        except Exception:  # noqa: BLE001 - untraceable: fall back to hooks
            rows = _summarize_hooks(model, inputs, macs)
            fields = {row.name: Field(row.rf_size, row.rf_jump, row.rf_start, row.rf_whole, row.rf_context)
                      for row in rows}
            method = "forward hooks (sequential fields)"
            final_map, channels_last, node_shapes = None, frozenset(), {}
    rows = _with_parameter_owners(model, rows)
    return Summary(name or type(model).__name__, (channels, *input_size), tuple(rows), method, fields, final_map,
                   channels_last, node_shapes)
