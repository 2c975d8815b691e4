"""How alike two attribution maps are, and the sanity check's result: torch-free for the UI thread.

The two scores are Adebayo et al.'s ("Sanity checks for saliency maps", NeurIPS 2018):

- Spearman rank correlation of the absolute values: is the same pixel ranking kept?
- SSIM of the maps normalised as in their code (`abs_grayscale_norm`: |a| / max |a|, so [0, 1]):
  does the picture look the same?

A method passes when its map changes once the weights it should explain are randomized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A map still this similar to the original after every layer is randomized fails the check.
# The paper gives no number; its cascading plots for Inception v3 (Fig. 2 and 4) end, for the
# methods it says pass (gradient, integrated gradients, Grad-CAM), near 0-0.2 in rank
# correlation (abs) and SSIM, while guided backprop and guided Grad-CAM stay at about 0.5 or
# above. 0.5 sits between the two groups: "more like the original than not".
FAILING_SSIM = 0.5
FAILING_SPEARMAN = 0.5


def abs_norm(a: np.ndarray) -> np.ndarray:
    """|a| / max |a| as float64 in [0, 1] (Adebayo et al.'s `abs_grayscale_norm` for 2-D maps); zeros stay zeros."""
    values = np.abs(np.asarray(a, dtype=np.float64))
    top = values.max() if values.size else 0.0
    return values / top if top > 0 and np.isfinite(top) else np.zeros_like(values)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of |a| and |b| (scipy.stats.spearmanr), as Adebayo et al.

    A constant map ranks nothing: it correlates 0 with a varying map, and 1 with another
    constant map (scipy would answer nan, which a plot and a verdict cannot use).
    """
    from scipy.stats import spearmanr

    x, y = np.abs(np.asarray(a, dtype=np.float64)).ravel(), np.abs(np.asarray(b, dtype=np.float64)).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps of different shapes: {np.shape(a)} and {np.shape(b)}")
    flat_x, flat_y = np.ptp(x) == 0, np.ptp(y) == 0
    if flat_x or flat_y:
        return 1.0 if flat_x and flat_y else 0.0
    return float(spearmanr(x, y).statistic)


def structural_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (skimage.metrics.structural_similarity, data_range=1) of the two maps normalised to [0, 1]."""
    from skimage.metrics import structural_similarity as ssim

    x, y = abs_norm(a), abs_norm(b)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"expected two (H, W) maps of one shape, got {np.shape(a)} and {np.shape(b)}")
    window = min(7, *x.shape)
    window -= 1 - window % 2          # odd, as skimage requires
    if window < 3:
        return 1.0 if np.array_equal(x, y) else 0.0
    return float(ssim(x, y, data_range=1.0, win_size=window))


@dataclass(frozen=True, eq=False)
class SanityResult:
    """The maps of each method as the model is randomized stage by stage, and how alike they stay."""

    mode: str                           # "cascading" | "independent"
    stages: tuple[str, ...]             # "original", then what each stage randomized (cascading: cumulative)
    methods: tuple[str, ...]
    maps: dict[str, list[np.ndarray]]   # method -> per stage (H, W) float32 map; stage 0 is the original model's
    spearman: dict[str, list[float]]    # method -> per stage, rank correlation of |map| with the original's
    ssim: dict[str, list[float]]        # method -> per stage, SSIM with the original's
    failing: dict[str, bool]            # still similar once everything is randomized (FAILING_SSIM / _SPEARMAN)
    display: np.ndarray                 # (H, W, 3) uint8: the input as displayed
    milliseconds: float
    modules: tuple[tuple[str, ...], ...] = ()   # per stage, the module names randomized in it (stage 0: none)
    options: dict[str, dict] | None = None      # method -> the options worth showing (Grad-CAM's layer, ...)
    complete: bool = True                       # cascading: the last stage has randomized every stage's modules

    def verdict(self, method: str) -> str:
        """One plain sentence on `method`: does its map depend on the weights?"""
        if method not in self.maps:
            raise KeyError(f"{method!r} was not checked; checked: {', '.join(self.methods)}")
        ssim, spearman = self.ssim[method][-1], self.spearman[method][-1]
        if len(self.stages) < 2:
            return f"{method}: not checked - no layer was randomized"
        if self.mode == "cascading":
            after = ("after randomizing every layer" if self.complete
                     else f"after randomizing down to {self.stages[-1]}")
        else:
            after = f"with only {self.stages[-1]} randomized"
        numbers = f"SSIM {_fmt(ssim)}, rank correlation {_fmt(spearman)} with the original"
        if self.failing[method]:
            return f"{method}: fails - {after} its map still has {numbers}"
        return f"{method}: passes - {after} its map has only {numbers}"


def is_failing(ssim: float, spearman: float) -> bool:
    """Still similar to the original: SSIM or rank correlation at or above the paper-derived line."""
    return (not math.isnan(ssim) and ssim >= FAILING_SSIM) or \
        (not math.isnan(spearman) and spearman >= FAILING_SPEARMAN)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"
