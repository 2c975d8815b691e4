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
                    rf_whole=rf.whole, hyper=hyper)


_GLOBAL_FUNCTIONS = {torch.flatten, torch.mean, torch.nn.functional.adaptive_avg_pool2d}
_MERGE_FUNCTIONS = {operator.add, torch.add, torch.cat, torch.mul, operator.mul}


def _summarize_graph(model: nn.Module, inputs: torch.Tensor,
                     macs: dict[str, int]) -> tuple[list[LayerRow], dict[LayerId, Field]]:
    graph_module = trace(model)
    with torch.no_grad():
        ShapeProp(graph_module).propagate(inputs)
    modules = dict(model.named_modules())
    fields: dict[fx.Node, Field] = {}
    rows: dict[str, LayerRow] = {}   # a module called twice keeps its first place, its last call's field
    for node in graph_module.graph.nodes:
        parents = [arg for arg in node.all_input_nodes if arg in fields]
        incoming = parents[0] if parents else None
        rf = fields[incoming] if incoming is not None else Field()
        for other in parents[1:]:
            rf = rf.union(fields[other])
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape)[1:] if hasattr(meta, "shape") else ()
        in_meta = incoming.meta.get("tensor_meta") if incoming is not None else None
        in_shape = tuple(in_meta.shape)[1:] if hasattr(in_meta, "shape") else ()
        if node.op == "placeholder":
            fields[node] = Field()
            continue
        if node.op == "call_module":
            module = modules[node.target]
            hyper = _window(module, in_shape)
            if hyper is None and isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                hyper = _adaptive_window(_spatial((1, *in_shape)) or (1, 1), _spatial((1, *shape)) or (1, 1))
                if shape and _spatial((1, *shape)) == (1, 1):
                    rf = Field(rf.size, rf.jump, rf.start, True)
                    hyper = None
            if hyper is not None and not rf.whole:
                rf = _apply(rf, hyper)
            if isinstance(module, (nn.Linear, nn.Flatten)) or len(shape) < 3:
                rf = Field(rf.size, rf.jump, rf.start, True)
            fields[node] = rf
            rows[str(node.target)] = _row(str(node.target), module, shape, macs, rf, hyper or {})
        else:
            target = node.target
            if target in _GLOBAL_FUNCTIONS or str(target) in ("flatten", "mean", "view", "reshape") \
                    or (shape and len(shape) < 3):
                rf = Field(rf.size, rf.jump, rf.start, True)
            fields[node] = rf
    by_module: dict[LayerId, Field] = {}
    for node in graph_module.graph.nodes:   # a container's field is its last node's
        for path in node.meta.get("nn_module_stack") or {}:
            if node in fields:
                by_module[path.split("@")[0]] = fields[node]
    by_module.update({name: Field(row.rf_size, row.rf_jump, row.rf_start, row.rf_whole)
                      for name, row in rows.items()})
    return list(rows.values()), by_module


def _summarize_hooks(model: nn.Module, inputs: torch.Tensor, macs: dict[str, int]) -> list[LayerRow]:
    """Leaf modules in execution order, fields composed as if they formed a chain."""
    order: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []
    def hook_for(name: str):
        def hook(mod, args, output):
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
            in_shape = tuple(args[0].shape[1:]) if args and isinstance(args[0], torch.Tensor) else ()
            order.append((name, mod, shape, in_shape))
        return hook

    with leaf_hooks(model, hook_for), torch.no_grad():
        model(inputs)
    rf, rows, seen = Field(), [], set()
    for name, module, shape, in_shape in order:
        hyper = _window(module, in_shape) or {}
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and shape[-2:] == (1, 1):
            rf = Field(rf.size, rf.jump, rf.start, True)
        elif hyper and not rf.whole:
            rf = _apply(rf, hyper)
        if isinstance(module, nn.Linear) or len(shape) < 3:
            rf = Field(rf.size, rf.jump, rf.start, True)
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
            rows, fields = _summarize_graph(model, inputs, macs)
            method = "torch.fx"
        except Exception:  # noqa: BLE001 - untraceable: fall back to hooks
            rows = _summarize_hooks(model, inputs, macs)
            fields = {row.name: Field(row.rf_size, row.rf_jump, row.rf_start, row.rf_whole) for row in rows}
            method = "forward hooks (sequential fields)"
    rows = _with_parameter_owners(model, rows)
    return Summary(name or type(model).__name__, (channels, *input_size), tuple(rows), method, fields)
