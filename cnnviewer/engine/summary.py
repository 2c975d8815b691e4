"""Model summary: per layer output shape, units, weights, MACs and receptive field.

The data flow comes from torch.fx (leaf modules kept as nodes), shapes from a
real forward pass through `ShapeProp`, multiply-accumulates from torch's own
`FlopCounterMode` (FLOPs / 2), and receptive fields from the standard
arithmetic propagated along the graph:

    r_out = r_in + (k_eff - 1) * j_in,   j_out = j_in * stride,
    start_out = start_in + ((k_eff - 1) / 2 - padding) * j_in,   k_eff = d (k - 1) + 1

with merges (add, concat) taking the union of their branches' fields, and
everything after global pooling or flatten seeing the whole image. Models that
torch.fx cannot trace are summarised from forward hooks in execution order,
composing fields sequentially (said in `Summary.method`).
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass, field

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils.flop_counter import FlopCounterMode

from cnnviewer.engine.types import LayerId


@dataclass(frozen=True)
class Field:
    """Receptive field of one output position along each spatial axis (height, width).

    `size` and `jump` are in input pixels; `start` is the centre of the first
    output position's field (0.5 is the centre of the first input pixel).
    `whole` marks layers after global pooling / flatten: they see everything.
    """

    size: tuple[float, float] = (1.0, 1.0)
    jump: tuple[float, float] = (1.0, 1.0)
    start: tuple[float, float] = (0.5, 0.5)
    whole: bool = False

    def through(self, kernel, stride, padding, dilation=(1, 1)) -> Field:
        """The field after a sliding window (conv or pool) on this one."""
        size, jump, start = [], [], []
        for axis in range(2):
            k_eff = dilation[axis] * (kernel[axis] - 1) + 1
            size.append(self.size[axis] + (k_eff - 1) * self.jump[axis])
            start.append(self.start[axis] + ((k_eff - 1) / 2 - padding[axis]) * self.jump[axis])
            jump.append(self.jump[axis] * stride[axis])
        return Field(tuple(size), tuple(jump), tuple(start), self.whole)

    def union(self, other: Field) -> Field:
        """The field covering both branches (add, concat)."""
        if self.whole or other.whole:
            return Field(self.size, self.jump, self.start, True)
        size, start = [], []
        for axis in range(2):
            low = min(self.start[axis] - self.size[axis] / 2, other.start[axis] - other.size[axis] / 2)
            high = max(self.start[axis] + self.size[axis] / 2, other.start[axis] + other.size[axis] / 2)
            size.append(high - low)
            start.append((low + high) / 2)
        jump = tuple(max(a, b) for a, b in zip(self.jump, other.jump))
        return Field(tuple(size), jump, tuple(start), False)

    def box(self, y: int, x: int) -> tuple[float, float, float, float]:
        """(top, left, bottom, right) in input pixel coordinates of neuron (y, x)."""
        cy = self.start[0] + y * self.jump[0]
        cx = self.start[1] + x * self.jump[1]
        return (cy - self.size[0] / 2, cx - self.size[1] / 2, cy + self.size[0] / 2, cx + self.size[1] / 2)


@dataclass(frozen=True)
class LayerRow:
    """One row of the summary table."""

    name: LayerId
    type: str
    output_shape: tuple[int, ...]          # without batch
    units: int                             # neurons: elements of the output
    params: int                            # weights, biases excluded
    bias_params: int
    macs: int
    rf_size: tuple[float, float]
    rf_jump: tuple[float, float]
    rf_start: tuple[float, float]
    rf_whole: bool
    hyper: dict = field(default_factory=dict)   # kernel, stride, padding, dilation, groups

    def as_json(self) -> dict:
        """Plain types for JSON/CSV."""
        row = asdict(self)
        row["output_shape"] = list(self.output_shape)
        for key in ("rf_size", "rf_jump", "rf_start"):
            row[key] = [_plain(v) for v in row[key]]
        return row


@dataclass(frozen=True)
class Summary:
    """Every leaf layer of a model with totals."""

    model: str
    input_shape: tuple[int, int, int]
    rows: tuple[LayerRow, ...]
    method: str                    # 'torch.fx' or 'forward hooks (sequential fields)'
    fields: dict = field(default_factory=dict)   # every module, containers too -> Field

    def field(self, name: LayerId) -> Field:
        """Receptive field of any module's output (a block: that of its last operation)."""
        return self.fields[name]

    @property
    def total_params(self) -> int:
        return sum(row.params + row.bias_params for row in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(row.macs for row in self.rows)

    def row(self, name: LayerId) -> LayerRow:
        """The row of one layer."""
        return next(row for row in self.rows if row.name == name)


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _window(module: nn.Module) -> dict | None:
    """kernel/stride/padding/dilation of a sliding-window module, None for others."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        padding = _pair(module.padding) if not isinstance(module.padding, str) else \
            tuple(((d * (k - 1)) // 2) for k, d in zip(kernel, _pair(getattr(module, "dilation", 1))))
        dilation = _pair(getattr(module, "dilation", 1))
        hyper = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation}
        if isinstance(module, nn.Conv2d):
            hyper["groups"] = module.groups
        return hyper
    return None


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


def summarize(model: nn.Module, input_size: tuple[int, int] = (224, 224), *, name: str = "",
              channels: int = 3) -> Summary:
    """Summarise every leaf layer of `model` for a (1, channels, H, W) input.

    The model's training flags are restored; gradients are off.
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first_conv.in_channels if first_conv is not None and channels == 3 else channels
    inputs = torch.zeros(1, channels, *input_size, device=device, dtype=dtype)
    try:
        macs = _module_macs(model, inputs)
        try:
            rows, fields = _summarize_graph(model, inputs, macs)
            method = "torch.fx"
        except Exception:  # noqa: BLE001 - untraceable: fall back to hooks
            rows = _summarize_hooks(model, inputs, macs)
            fields = {row.name: Field(row.rf_size, row.rf_jump, row.rf_start, row.rf_whole) for row in rows}
            method = "forward hooks (sequential fields)"
    finally:
        for module, training in modes.items():
            module.training = training
    return Summary(name or type(model).__name__, (channels, *input_size), tuple(rows), method, fields)


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
    graph_module = fx.symbolic_trace(model)
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
            hyper = _window(module)
            if hyper is None and isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                hyper = _adaptive_window(_spatial((1, *in_shape)) or (1, 1), _spatial((1, *shape)) or (1, 1))
                if shape and _spatial((1, *shape)) == (1, 1):
                    rf = Field(rf.size, rf.jump, rf.start, True)
                    hyper = None
            if hyper is not None and not rf.whole:
                rf = rf.through(hyper["kernel"], hyper["stride"], hyper["padding"], hyper["dilation"])
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
    handles = []
    for name, module in model.named_modules():
        if not any(True for _ in module.children()):
            def hook(mod, args, output, name=name):
                shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
                in_shape = tuple(args[0].shape[1:]) if args and isinstance(args[0], torch.Tensor) else ()
                order.append((name, mod, shape, in_shape))
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    rf, rows, seen = Field(), [], set()
    for name, module, shape, in_shape in order:
        hyper = _window(module) or {}
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and shape[-2:] == (1, 1):
            rf = Field(rf.size, rf.jump, rf.start, True)
        elif hyper and not rf.whole:
            rf = rf.through(hyper["kernel"], hyper["stride"], hyper["padding"], hyper["dilation"])
        if isinstance(module, nn.Linear) or len(shape) < 3:
            rf = Field(rf.size, rf.jump, rf.start, True)
        if name not in seen:
            seen.add(name)
            rows.append(_row(name, module, shape, macs, rf, hyper))
    return rows


CSV_COLUMNS = ("name", "type", "output_shape", "units", "params", "bias_params", "macs",
               "rf_size", "rf_jump", "rf_start", "rf_whole")


def _cell(value) -> str:
    if isinstance(value, (tuple, list)):
        return "x".join(str(_plain(v)) for v in value)
    return str(value)


def summary_csv(summary: Summary) -> str:
    """The table as CSV (shapes and fields as 'AxB'), one header line then one line per layer."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in summary.rows:
        writer.writerow([_cell(getattr(row, column)) for column in CSV_COLUMNS])
    return buffer.getvalue()


def _field_text(row: LayerRow) -> str:
    if row.rf_whole:
        return "whole image"
    size = _plain(row.rf_size[0]) if row.rf_size[0] == row.rf_size[1] else _cell(row.rf_size)
    jump = _plain(row.rf_jump[0]) if row.rf_jump[0] == row.rf_jump[1] else _cell(row.rf_jump)
    return f"{size} (jump {jump})"


def summary_table(summary: Summary) -> str:
    """A fixed-width text table with totals, for the terminal."""
    header = f"{'layer':<32} {'type':<20} {'output':<16} {'units':>11} {'weights':>11} {'biases':>8} {'MACs':>14}  receptive field"
    lines = [f"{summary.model}, input {_cell(summary.input_shape)} ({summary.method})", header, "-" * len(header)]
    for row in summary.rows:
        lines.append(f"{row.name:<32.32} {row.type:<20.20} {_cell(row.output_shape):<16} {row.units:>11,} "
                     f"{row.params:>11,} {row.bias_params:>8,} {row.macs:>14,}  {_field_text(row)}")
    lines.append("-" * len(header))
    weights = sum(row.params for row in summary.rows)
    biases = sum(row.bias_params for row in summary.rows)
    lines.append(f"{'total':<32} {'':<20} {'':<16} {'':>11} {weights:>11,} {biases:>8,} {summary.total_macs:>14,}")
    return "\n".join(lines)
