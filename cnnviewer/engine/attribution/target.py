"""What a gradient view is taken of, and its result: torch-free, so the UI thread can use them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cnnviewer.engine.types import LayerId

Method = Literal["saliency", "guided-backprop", "deconvnet", "grad-cam", "integrated-gradients", "occlusion",
                 "input-x-gradient", "smoothgrad", "grad-cam++", "score-cam", "layer-cam", "eigen-cam"]
METHODS: tuple[str, ...] = ("saliency", "guided-backprop", "deconvnet", "grad-cam", "integrated-gradients",
                            "occlusion", "input-x-gradient", "smoothgrad", "grad-cam++", "score-cam", "layer-cam",
                            "eigen-cam")
CAM_METHODS: tuple[str, ...] = ("grad-cam", "grad-cam++", "score-cam", "layer-cam", "eigen-cam")   # take a layer
SMOOTHABLE: tuple[str, ...] = ("saliency", "guided-backprop", "integrated-gradients", "input-x-gradient")
SLOW_METHODS: tuple[str, ...] = ("occlusion", "integrated-gradients", "smoothgrad", "score-cam")   # progress, Cancel
IG_BASELINES = ("mean colour", "black", "blurred")   # integrated gradients' starting images


@dataclass(frozen=True)
class Target:
    """What the gradient is taken of: a class score, a channel's sum, or one neuron.

    A class target uses the model's output (pre-softmax score); a layer target
    uses that module's output: the whole channel summed, or a(y, x, c).
    """

    class_index: int | None = None
    layer: LayerId | None = None
    channel: int | None = None
    neuron: tuple[int, int] | None = None
    # A class map's region (y0, x0, y1, x1), half-open, in the output map's positions: the sum of
    # the class's scores there (Seg-Grad-CAM, Vinogradova et al. 2020). None: every position.
    region: tuple[int, int, int, int] | None = None
    # The same, as fractions (y0, x0, y1, x1) of the model's input (the crop every panel shows):
    # what the window's clicks and boxes give, since they cannot know the output map's size.
    box: tuple[float, float, float, float] | None = None

    def region_in(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """The region in an (height, width) output map's positions: `region` as given, else `box`
        scaled (at least one position; a box outside the map is clamped to its edge), else None."""
        if self.region is not None or self.box is None:
            return self.region
        return box_positions(self.box, height, width)

    def where(self) -> str:
        """The part of a class map explained, in words ('' for the whole output): what the views'
        titles add after the class, so a region is never mistaken for the whole image."""
        if self.region is not None:
            y0, x0, y1, x1 = self.region
            if y1 - y0 == 1 and x1 - x0 == 1:
                return f" at map position (row {y0}, column {x0})"
            return f" over map rows {y0}-{y1 - 1}, columns {x0}-{x1 - 1}"
        if self.box is not None:
            y0, x0, y1, x1 = (round(v * 100) for v in self.box)
            if y1 - y0 <= 1 and x1 - x0 <= 1:
                return f" at one pixel ({x0}% across, {y0}% down the input)"
            return f" over a box ({x0}-{x1}% across, {y0}-{y1}% down the input)"
        return ""

    def describe(self) -> str:
        if self.layer is None:
            return f"class {self.class_index}{self.where()}"
        where = f" at (y={self.neuron[0]}, x={self.neuron[1]})" if self.neuron else ""
        return f"{self.layer} channel {self.channel}{where}"


def box_positions(box: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    """Fractions (y0, x0, y1, x1) of an image -> half-open positions of an (height, width) map
    covering it: every position the box touches, at least one. A box made from positions (row / h)
    comes back as those positions: edges within 1e-6 of a position's border count as on it (float
    error turned one clicked cell into 2×2 on some map sizes)."""
    y0, x0, y1, x1 = (min(max(float(v), 0.0), 1.0) for v in box)
    top, left = min(math.floor(y0 * height + 1e-6), height - 1), min(math.floor(x0 * width + 1e-6), width - 1)
    bottom = max(top + 1, min(height, math.ceil(y1 * height - 1e-6)))
    right = max(left + 1, min(width, math.ceil(x1 * width - 1e-6)))
    return top, left, bottom, right


@dataclass(frozen=True, eq=False)
class GradientResult:
    """One gradient view: (C, H, W) float32 attribution aligned with `display`."""

    method: str
    target: Target
    attribution: np.ndarray
    display: np.ndarray
    options: dict
    milliseconds: float
