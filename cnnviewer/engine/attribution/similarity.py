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

# Failing: the map keeps the original's pixel ranking while the network is randomized. The paper
# gives no number and judges its curves (Fig. 2, 4): methods that pass fall at once, guided
# backprop stays high until the lowest layers go. So the score is the curve's mean: the rank
# correlation averaged over the randomized stages (the area under the paper's plot), failing at
# 0.5 or more - "more like the original than not". Not the last stage alone: once the first conv
# is random too, every method's map on MobileNetV2 ends below 0.4, guided backprop included
# (0.20-0.36; saliency 0.01-0.17; Grad-CAM's 7x7 random map -0.3-0.65 by seed), while the mean
# separates them (guided backprop 0.73-0.77, saliency 0.15-0.28, Grad-CAM -0.17-0.29). Measured
# on the cat, espresso and astronaut photos, seeds 0-1 (Grad-CAM: 0-7). SSIM is reported too; its
# curve falls for every method once random textures appear.
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
    failing: dict[str, bool]            # the map keeps its ranking while randomized (is_failing)
    display: np.ndarray                 # (H, W, 3) uint8: the input as displayed
    milliseconds: float
    modules: tuple[tuple[str, ...], ...] = ()   # per stage, the module names randomized in it (stage 0: none)
    options: dict[str, dict] | None = None      # method -> the options worth showing (Grad-CAM's layer, ...)
    complete: bool = True                       # cascading: the last stage has randomized every stage's modules

    def verdict(self, method: str) -> str:
        """One plain sentence on `method`: does its map depend on the weights?"""
        if method not in self.maps:
            raise KeyError(f"{method!r} was not checked; checked: {', '.join(self.methods)}")
        if len(self.stages) < 2:
            return f"{method}: not checked - no layer was randomized"
        mean = mean_similarity(self.spearman[method])
        last, ssim = self.spearman[method][-1], self.ssim[method][-1]
        if self.mode == "cascading":
            while_ = "while the layers are randomized from the output down"
            end = "once every layer is random" if self.complete else f"once {self.stages[-1]} is random too"
        else:
            while_, end = "when any one block is randomized", f"with only {self.stages[-1]} random"
        numbers = (f"a rank correlation of {_fmt(mean)} on average with the original {while_} "
                   f"({_fmt(last)}, SSIM {_fmt(ssim)} {end})")
        if self.failing[method]:
            return f"{method}: fails - its map keeps {numbers}"
        return f"{method}: passes - its map keeps only {numbers}"


def mean_similarity(per_stage: list[float]) -> float:
    """The mean over the randomized stages (stage 0, the original, left out); nan counts as 0."""
    values = [0.0 if math.isnan(v) else v for v in per_stage[1:]]
    return sum(values) / len(values) if values else math.nan


def is_failing(spearman: list[float]) -> bool:
    """The map keeps its ranking through the randomization: mean rank correlation >= FAILING_SPEARMAN."""
    mean = mean_similarity(spearman)
    return not math.isnan(mean) and mean >= FAILING_SPEARMAN


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"
