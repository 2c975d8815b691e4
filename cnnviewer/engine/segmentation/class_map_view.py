"""A class map as the window draws it: numpy only, so the window's thread can read it (hover, a
legend click, a dragged box) without torch. The job thread builds it (class_map_build)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnviewer.engine.segmentation.overlay import class_table


@dataclass(frozen=True)
class LegendEntry:
    """One class present in the map."""

    class_index: int
    name: str
    area: float              # share of the map's pixels, 0..1
    mean_probability: float  # of this class over its own pixels


@dataclass(frozen=True, eq=False)
class ClassMapView:
    """Per pixel of the model's input crop: the most probable class and its probability."""

    model_token: int
    image: object                  # the InputImage it was computed for (compared by identity)
    labels: np.ndarray             # (H, W) int32 at the input crop's resolution
    confidence: np.ndarray         # (H, W) float32: the winning class's probability
    grid: tuple[int, int]          # (h, w) of the model's output map
    grid_labels: np.ndarray        # (h, w) int32: the most probable class at each output position
    legend: tuple[LegendEntry, ...]  # by area, largest first
    colours: np.ndarray            # (K, 3) uint8: overlay.palette(K), its first colours to the legend's classes
    extent: tuple[float, float, float, float]  # (y0, x0, y1, x1): where the crop lies in the image

    def at(self, fy: float, fx: float) -> tuple[int, float] | None:
        """(class, probability) at fractions (fy, fx) of the crop; None outside it."""
        height, width = self.labels.shape
        y, x = int(np.floor(fy * height)), int(np.floor(fx * width))
        if not (0 <= y < height and 0 <= x < width):
            return None
        return int(self.labels[y, x]), float(self.confidence[y, x])

    def output_cell(self, fy: float, fx: float) -> tuple[int, tuple[float, float, float, float]] | None:
        """The output position under fractions (fy, fx) of the crop: (its class, its region as fractions
        (y0, x0, y1, x1) of the crop). A click explains what that one output pixel says."""
        h, w = self.grid
        y, x = int(np.floor(fy * h)), int(np.floor(fx * w))
        if not (0 <= y < h and 0 <= x < w):
            return None
        return int(self.grid_labels[y, x]), (y / h, x / w, (y + 1) / h, (x + 1) / w)

    def box_class(self, box: tuple[float, float, float, float]) -> int | None:
        """The most frequent class inside `box` (fractions y0, x0, y1, x1 of the crop); None when empty."""
        height, width = self.labels.shape
        y0, x0 = int(np.floor(box[0] * height)), int(np.floor(box[1] * width))
        y1, x1 = int(np.ceil(box[2] * height)), int(np.ceil(box[3] * width))
        inside = self.labels[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
        if inside.size == 0:
            return None
        return int(np.bincount(inside.ravel()).argmax())


def legend_of(labels: np.ndarray, confidence: np.ndarray, names) -> tuple[LegendEntry, ...]:
    """Every class present, largest area first (`names(index)` gives a class's name)."""
    total = labels.size
    return tuple(LegendEntry(row["class"], names(row["class"]), row["pixels"] / total, row["mean_probability"])
                 for row in class_table(labels, confidence))


def coloured(view: ClassMapView) -> np.ndarray:
    """(H, W, 4) uint8: each pixel's class colour, opaque; the window dims it with the item's opacity
    and hides classes through the alpha channel (see `shown_alpha`), so redraws need no blending."""
    rgba = np.empty((*view.labels.shape, 4), np.uint8)
    rgba[..., :3] = view.colours[view.labels]
    rgba[..., 3] = 255
    return rgba


def shown_alpha(view: ClassMapView, shown: set[int] | None) -> np.ndarray:
    """(H, W) uint8 alpha: 255 where the class is shown (all when `shown` is None), 0 elsewhere."""
    if shown is None:
        return np.full(view.labels.shape, 255, np.uint8)
    table = np.zeros(len(view.colours), np.uint8)
    table[[c for c in shown if 0 <= c < len(table)]] = 255
    return table[view.labels]


def class_map_size(layers) -> tuple[int, int] | None:
    """(h, w) of a recorded pass's class map when the model outputs one, else None: its root output
    (LayerInfo named '', unbatched) is (K, h, w). Read from ForwardSummary.layers, so the window's
    thread can ask."""
    root = next((info for info in layers if info.name == ""), None)
    shape = root.output_shape if root is not None else None
    return (int(shape[1]), int(shape[2])) if shape is not None and len(shape) == 3 else None
