"""The probe tab's plot: equivariance error, pooled invariance and raw-map cosine against layer depth,
and the hover text of one layer. pyqtgraph is imported when the first plot is built."""

from __future__ import annotations

import math

import numpy as np

CURVES = (("equivariance", "equivariance error", (230, 120, 60)),
          ("invariance", "invariance (pooled cosine)", (90, 170, 240)),
          ("map_similarity", "raw map cosine", (120, 200, 120)))


def build_plot():
    """(PlotWidget, its legend, the hover marker line)."""
    import pyqtgraph as pg

    plot = pg.PlotWidget(background=(30, 30, 34))
    plot.setLabel("bottom", "layer (depth order)")
    plot.setLabel("left", "error / cosine")
    plot.showGrid(x=True, y=True, alpha=0.2)
    plot.getAxis("left").enableAutoSIPrefix(False)
    plot.setMinimumHeight(200)
    legend = plot.addLegend(offset=(10, 5), brush=pg.mkBrush(30, 30, 34, 190))   # top left, above the curves
    marker = pg.InfiniteLine(angle=90, pen=pg.mkPen((200, 200, 200, 120), width=1))
    return plot, legend, marker


def plotted(result, column: int | None) -> dict[str, np.ndarray]:
    """Per curve, one value per layer: amount `column`, or (None / -1) the mean over the amounts where
    defined (NaN where no amount is)."""
    out = {}
    for name, _label, _colour in CURVES:
        values = getattr(result, name)
        if values is None:
            continue
        if column is None or column < 0:
            finite = np.isfinite(values)
            counts = finite.sum(axis=1)
            sums = np.where(finite, values, 0.0).sum(axis=1)
            out[name] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        else:
            out[name] = values[:, column]
    return out


def draw(plot, legend, marker, result, curves: dict[str, np.ndarray]) -> None:
    """Every curve against the layer index, about six layer names as ticks."""
    import pyqtgraph as pg

    plot.clear()
    legend.clear()
    x = np.arange(len(result.layers), dtype=float)
    for name, label, colour in CURVES:
        if name in curves:
            plot.plot(x, curves[name], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=4, symbolBrush=colour,
                      symbolPen=None, name=label, connect="finite")
    plot.addItem(marker, ignoreBounds=True)
    every = max(1, -(-len(x) // 4))     # four names fit a 420 px dock; hovering names every layer
    plot.getAxis("bottom").setTicks([[(i, _short(n)) for i, n in enumerate(result.layers) if i % every == 0]])
    plot.setXRange(-0.5, len(x) - 0.5, padding=0.02)
    highest = max([1.0] + [float(np.nanmax(v)) for v in curves.values() if np.isfinite(v).any()])
    plot.setYRange(min(0.0, *[float(np.nanmin(v)) for v in curves.values() if np.isfinite(v).any()]) - 0.05,
                   highest * 1.4)   # headroom: the legend sits above the curves


def describe(result, index: int, curves: dict[str, np.ndarray]) -> str:
    """Hover text for layer `index`: name, type, jump, the plotted values, and why it behaves so."""
    name = result.layers[index]
    numbers = ", ".join(f"{label} {_number(curves[key][index])}" for key, label, _c in CURVES if key in curves)
    jump = result.jumps[index]
    where = f"jump {jump:g} px" if jump is not None else "no map"
    return f"{index}: {name} ({result.layer_types[index]}, {where}) — {numbers}\n{result.why(name)}"


def _short(name: str) -> str:
    return name if len(name) <= 12 else "…" + name[-11:]


def _number(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3f}"
