"""Model summary: per layer output shape, units, weights, MACs and receptive field.

The data flow comes from torch.fx (leaf modules kept as nodes), shapes from a
real forward pass through `ShapeProp`, multiply-accumulates from torch's own
`FlopCounterMode` (FLOPs / 2), and receptive fields from the standard
arithmetic propagated along the graph:

    r_out = r_in + (k_eff - 1) * j_in,   j_out = j_in * stride,
    start_out = start_in + ((k_eff - 1) / 2 - padding) * j_in,   k_eff = d (k - 1) + 1

with merges (add, concat) taking the union of their branches' fields, except
that an operand broadcast over H and W (a squeeze-and-excitation gate) adds
context, not extent; and everything after global pooling or flatten seeing the
whole image. Layouts are followed through permutes (`field_flow`). Models that
torch.fx cannot trace are summarised from forward hooks in execution order,
composing fields sequentially (said in `Summary.method`).

This module holds the results and their text/CSV forms and imports no torch;
the computation, `summary_graph.summarize`, runs on the job thread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cnnviewer.engine.types import LayerId


@dataclass(frozen=True)
class Field:
    """Receptive field of one output position along each spatial axis (height, width).

    `size` and `jump` are in input pixels; `start` is the centre of the first
    output position's field (0.5 is the centre of the first input pixel).
    `whole` marks layers after global pooling / flatten: they see everything.
    `context` marks fields that also take per-channel values computed from the whole map
    (squeeze-and-excitation gates): every pixel nudges them, but their spatial detail,
    and their input gradient where the gates are held fixed, stays inside `size`.
    """

    size: tuple[float, float] = (1.0, 1.0)
    jump: tuple[float, float] = (1.0, 1.0)
    start: tuple[float, float] = (0.5, 0.5)
    whole: bool = False
    context: bool = False

    def through(self, kernel, stride, padding, dilation=(1, 1)) -> Field:
        """The field after a sliding window (conv or pool) on this one."""
        size, jump, start = [], [], []
        for axis in range(2):
            k_eff = dilation[axis] * (kernel[axis] - 1) + 1
            size.append(self.size[axis] + (k_eff - 1) * self.jump[axis])
            start.append(self.start[axis] + ((k_eff - 1) / 2 - padding[axis]) * self.jump[axis])
            jump.append(self.jump[axis] * stride[axis])
        return Field(tuple(size), tuple(jump), tuple(start), self.whole, self.context)

    def through_transposed(self, kernel, stride, padding, dilation=(1, 1)) -> Field:
        """The field after a transposed convolution: output o reads inputs (o + p - t) / s."""
        size, jump, start = [], [], []
        for axis in range(2):
            k_eff = dilation[axis] * (kernel[axis] - 1) + 1
            step = self.jump[axis] / stride[axis]
            size.append(self.size[axis] + (k_eff - 1) * step)
            start.append(self.start[axis] + (padding[axis] - (k_eff - 1) / 2) * step)
            jump.append(step)
        return Field(tuple(size), tuple(jump), tuple(start), self.whole, self.context)

    def union(self, other: Field) -> Field:
        """The field covering both branches (add, concat)."""
        context = self.context or other.context
        if self.whole or other.whole:
            return Field(self.size, self.jump, self.start, True, context)
        size, start = [], []
        for axis in range(2):
            low = min(self.start[axis] - self.size[axis] / 2, other.start[axis] - other.size[axis] / 2)
            high = max(self.start[axis] + self.size[axis] / 2, other.start[axis] + other.size[axis] / 2)
            size.append(high - low)
            start.append((low + high) / 2)
        jump = tuple(max(a, b) for a, b in zip(self.jump, other.jump))
        return Field(tuple(size), jump, tuple(start), False, context)

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
    rf_context: bool = False               # also gated by whole-map context (see Field.context)

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
    final_map: LayerId | None = None       # the last module with spatial maps before global pooling
    channels_last: frozenset = frozenset()   # modules whose output is (H, W, C), e.g. ConvNeXt's Linear
    # Output shape (batch excluded) of every function and method node of the fx trace, by node name:
    # the architecture graph shows them (an F.interpolate's upsampled map) without another forward.
    node_shapes: dict = field(default_factory=dict)

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


CSV_COLUMNS = ("name", "type", "output_shape", "units", "params", "bias_params", "macs",
               "rf_size", "rf_jump", "rf_start", "rf_whole", "rf_context")


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


def field_text(row: LayerRow) -> str:
    """'35 (jump 4)', '35 (jump 4) + gates' (squeeze-and-excitation context) or 'whole image'."""
    if row.rf_whole:
        return "whole image"
    size = _plain(row.rf_size[0]) if row.rf_size[0] == row.rf_size[1] else _cell(row.rf_size)
    jump = _plain(row.rf_jump[0]) if row.rf_jump[0] == row.rf_jump[1] else _cell(row.rf_jump)
    return f"{size} (jump {jump})" + (" + gates" if row.rf_context else "")


def summary_table(summary: Summary) -> str:
    """A fixed-width text table with totals, for the terminal."""
    header = f"{'layer':<32} {'type':<20} {'output':<16} {'units':>11} {'weights':>11} {'biases':>8} {'MACs':>14}  receptive field"
    lines = [f"{summary.model}, input {_cell(summary.input_shape)} ({summary.method})", header, "-" * len(header)]
    for row in summary.rows:
        lines.append(f"{row.name:<32.32} {row.type:<20.20} {_cell(row.output_shape):<16} {row.units:>11,} "
                     f"{row.params:>11,} {row.bias_params:>8,} {row.macs:>14,}  {field_text(row)}")
    lines.append("-" * len(header))
    weights = sum(row.params for row in summary.rows)
    biases = sum(row.bias_params for row in summary.rows)
    lines.append(f"{'total':<32} {'':<20} {'':<16} {'':>11} {weights:>11,} {biases:>8,} {summary.total_macs:>14,}")
    return "\n".join(lines)
