"""Faithfulness scores of a map, as the UI thread sees them: numpy only (no torch).

A map is faithful when the pixels it ranks first are the ones the prediction
rests on. Deletion / insertion (Petsiuk et al. 2018) remove or restore pixels in
the map's order and follow p(target); ROAD (Rong et al. 2022) removes them at
fixed fractions and fills the hole by noisy linear imputation, so the filled
region carries no shape of its own for the model to react to. The curves are
computed on the job thread (faithfulness.py); this module holds their results,
the pixel ranking, and the composites the Faithfulness view shows under the
mouse, which need no model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnviewer.engine.attribution.target import Target

CURVES: tuple[str, ...] = ("deletion", "insertion", "road-morf", "road-lerf")
# paper: deletion fills black, insertion starts from a blurred copy (Petsiuk et al. 2018)
SUBSTRATES: tuple[str, ...] = ("paper", "black", "blurred", "mean colour")
BETTER: dict[str, str] = {"deletion": "lower", "insertion": "higher", "road-morf": "lower", "road-lerf": "higher",
                          "road": "higher", "average-drop": "lower", "increase-in-confidence": "higher"}
LABELS: dict[str, str] = {"deletion": "deletion AUC", "insertion": "insertion AUC", "road-morf": "ROAD MoRF",
                          "road-lerf": "ROAD LeRF", "road": "ROAD", "average-drop": "Average Drop",
                          "increase-in-confidence": "Increase in Confidence"}
SIGNED_METHODS: tuple[str, ...] = ("integrated-gradients", "input-x-gradient", "occlusion")


@dataclass(frozen=True, eq=False)
class Curve:
    """p(target) against the fraction of pixels removed (deletion, ROAD) or inserted (insertion)."""

    name: str
    fractions: np.ndarray          # (S,) fraction of pixels removed / inserted, 0..1
    values: np.ndarray             # (S,) p(target) after each step
    frames: np.ndarray | None = None   # ROAD only: (S, H, W, 3) uint8 imputed images as displayed

    def auc(self) -> float:
        """Area under the curve by the trapezoid rule over the fractions."""
        return trapezoid(self.values, self.fractions)


@dataclass(frozen=True, eq=False)
class Faithfulness:
    """Every score of one map, with what the Faithfulness view needs to redraw any step without torch."""

    method: str
    target: Target
    curves: dict[str, Curve]
    scores: dict[str, float]       # keys of BETTER: those computed
    order: np.ndarray              # (H*W,) int32 pixel indices, most relevant first
    substrates: dict[str, np.ndarray]   # "deletion"/"insertion" -> (H, W, 3) uint8 fill / start image
    display: np.ndarray            # (H, W, 3) uint8 the input as displayed
    milliseconds: float
    options: dict | None = None    # steps, substrate, percentiles: what the numbers were computed with

    def caption(self) -> str:
        """One line under a map: each score and its direction."""
        parts = []
        for key in ("deletion", "insertion", "road", "average-drop", "increase-in-confidence"):
            if key in self.scores:
                parts.append(f"{LABELS[key]} {self.scores[key]:.2f} ({BETTER[key]} is better)")
        return " · ".join(parts)

    def frame(self, curve: str, step: int) -> np.ndarray:
        """The perturbed image at `step` of `curve`, as displayed."""
        found = self.curves[curve]
        if found.frames is not None:
            return found.frames[step]
        if curve not in ("deletion", "insertion"):
            raise KeyError(f"{curve!r} keeps no frames")
        count = round(float(found.fractions[step]) * self.order.size)
        return composite(self.display, self.substrates[curve], self.order, count, curve)


def trapezoid(values: np.ndarray, fractions: np.ndarray) -> float:
    """∫ values d(fraction) by the trapezoid rule (np.trapz was renamed across numpy versions)."""
    values = np.asarray(values, dtype=np.float64)
    fractions = np.asarray(fractions, dtype=np.float64)
    return float(np.sum((values[1:] + values[:-1]) * np.diff(fractions)) / 2.0)


def step_counts(pixels: int, steps: int) -> np.ndarray:
    """How many pixels are removed (or inserted) at steps 0..steps: evenly spaced, 0 and all included."""
    return np.rint(np.linspace(0, pixels, steps + 1)).astype(np.int64)


def composite(display: np.ndarray, substrate: np.ndarray, order: np.ndarray, count: int, curve: str) -> np.ndarray:
    """Deletion: the first `count` pixels of `order` taken from `substrate`; insertion: from `display`
    over the substrate."""
    height, width = display.shape[:2]
    taken = np.zeros(height * width, dtype=bool)
    taken[order[:count]] = True
    taken = taken.reshape(height, width, 1)
    if curve == "deletion":
        return np.where(taken, substrate, display)
    return np.where(taken, display, substrate)


def ranking(method: str, attribution: np.ndarray, options: dict | None = None) -> np.ndarray:
    """(C, H, W) attribution -> (H, W) relevance whose descending order deletion and ROAD follow.

    Signed methods (integrated gradients, input × gradient, occlusion, SmoothGrad of those) sum
    over channels with their sign: evidence *against* the target is least relevant, not most,
    and their completeness property is a sum over pixels. Gradient-magnitude methods (saliency,
    guided backprop, DeconvNet, SmoothGrad of those) take max |a| over channels, the map the
    view shows (Simonyan et al.): their sign says which way a pixel would move, not whether it
    helps. A CAM is already one non-negative map.
    """
    values = np.asarray(attribution, dtype=np.float32)
    if values.ndim == 2:
        return values
    base = (options or {}).get("base", "saliency") if method == "smoothgrad" else method
    if values.shape[0] == 1:
        return values[0]
    if base in SIGNED_METHODS:
        return values.sum(axis=0)
    return np.abs(values).max(axis=0)


def pixel_order(relevance: np.ndarray) -> np.ndarray:
    """(H*W,) int32 pixel indices, most relevant first; ties keep raster order (a stable sort)."""
    flat = np.asarray(relevance, dtype=np.float32).ravel()
    return np.argsort(-flat, kind="stable").astype(np.int32)
