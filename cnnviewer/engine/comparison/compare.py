"""Two models on the same image: their top-5s and where they disagree, the layers they share,
and, for one architecture with two weight files, how far each layer moved (weights and
activations, relative to the first model), in depth order.

The relative difference ||b - a|| / ||a|| is what fine-tuning literature plots per layer: it is
scale-free, so a 3x3 stem and a 1280-channel head are comparable, and 0 means untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.inference import ActivationCache, top_k
from cnnviewer.engine.types import LayerId, Prediction


@dataclass(frozen=True)
class LayerDrift:
    """How one layer differs between the two models (None where it cannot be compared)."""

    name: LayerId
    depth: int                         # position in the first model's execution order
    activation: float | None           # ||a_B - a_A|| / ||a_A|| on this image
    weights: float | None              # ||W_B - W_A|| / ||W_A|| over the layer's own parameters


@dataclass(frozen=True, eq=False)
class Comparison:
    """Everything the compare view and `cnnviewer compare` show."""

    names: tuple[str, str]
    predictions: tuple[tuple[Prediction, ...], tuple[Prediction, ...]]
    same_architecture: bool
    shared_layers: tuple[LayerId, ...]   # recorded in both with the same output shape, in depth order
    drift: tuple[LayerDrift, ...]        # same architecture only: leaf layers in execution order
    broken: tuple[str | None, str | None] = (None, None)   # "NaN outputs" for a side whose output is not finite

    def warnings(self) -> list[str]:
        """One sentence per side whose outputs are not numbers: its top-5 is not a ranking."""
        return [f"model {side} ({name}) produces {what}: its top-5 is not a ranking"
                for side, name, what in zip("AB", self.names, self.broken) if what]

    @property
    def top1_agrees(self) -> bool:
        return bool(self.predictions[0]) and bool(self.predictions[1]) \
            and self.predictions[0][0].label == self.predictions[1][0].label

    def disagreements(self) -> tuple[list[str], list[str]]:
        """Classes in one top-5 and not in the other's (by name: two label sets may number differently)."""
        left = [p.label for p in self.predictions[0]]
        right = [p.label for p in self.predictions[1]]
        return [name for name in left if name not in right], [name for name in right if name not in left]

    def most_changed(self, count: int = 5) -> list[LayerDrift]:
        """The layers whose weights moved most (then activations), largest first."""
        scored = [d for d in self.drift if d.weights is not None or d.activation is not None]
        return sorted(scored, key=lambda d: (_descending(d.weights), _descending(d.activation)))[:count]


def _descending(value: float | None) -> float:
    """A sort key, largest first; None and NaN (a model with broken weights) last, not at random."""
    return -value if value is not None and not math.isnan(value) else math.inf


def nonfinite(probabilities: np.ndarray) -> str | None:
    """What is wrong with a model's outputs ("NaN outputs"), or None when every one is a number.
    Broken weights (a negative BatchNorm variance) give NaN everywhere; argsort would still rank
    them, and "tench 'nan%'" reads like an answer."""
    values = np.asarray(probabilities, dtype=float)
    if np.isnan(values).any():
        return "NaN outputs"
    if not np.isfinite(values).all():
        return "infinite outputs"
    return None


def _relative(a: torch.Tensor, b: torch.Tensor) -> float | None:
    if a.shape != b.shape:
        return None
    norm = float(torch.linalg.vector_norm(a.float()))
    gap = float(torch.linalg.vector_norm(b.float() - a.float()))
    if norm == 0.0:
        return 0.0 if gap == 0.0 else math.inf
    return gap / norm


def same_architecture(left: LoadedModel, right: LoadedModel) -> bool:
    """Same module names, types and parameter shapes: two weight files of one network."""
    if left.layer_names != right.layer_names or left.layer_types != right.layer_types:
        return False
    a, b = left.module.state_dict(), right.module.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def _weight_drift(left: LoadedModel, right: LoadedModel) -> dict[LayerId, float | None]:
    modules_b = dict(right.module.named_modules())
    drift: dict[LayerId, float | None] = {}
    for name, module in left.module.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        theirs = dict(modules_b[name].named_parameters(recurse=False))
        a = torch.cat([p.detach().flatten().float().cpu() for p in own.values()])
        b = torch.cat([theirs[k].detach().flatten().float().cpu() for k in own])
        drift[name] = _relative(a, b)
    return drift


def compare(left: LoadedModel, right: LoadedModel, image: InputImage,
            caches: tuple[ActivationCache, ActivationCache] | None = None) -> Comparison:
    """Run both models on `image` (each with its own preprocessing) and compare them."""
    caches = caches or (ActivationCache(), ActivationCache())
    passes = caches[0].get(left, image), caches[1].get(right, image)
    broken = nonfinite(passes[0].probabilities), nonfinite(passes[1].probabilities)
    predictions = tuple(() if bad else tuple(top_k(model, run.probabilities, 5))
                        for model, run, bad in zip((left, right), passes, broken))
    acts_a, acts_b = passes[0].activations, passes[1].activations
    order = [info.name for info in passes[0].layers if info.name and info.name in acts_a]
    shared = tuple(name for name in order if name in acts_b and acts_a.shape(name) == acts_b.shape(name))
    same = same_architecture(left, right)
    drift: tuple[LayerDrift, ...] = ()
    if same:
        # Depth = execution order of the leaf layers (a container's output is its last child's, and
        # named_modules() lists it before its children, which would put a late value at depth 0).
        leaves = {name for name, module in left.module.named_modules() if not any(True for _ in module.children())}
        comparable = leaves & set(shared)
        executed = [name for name in acts_a if name in comparable]
        weights = _weight_drift(left, right)
        drift = tuple(LayerDrift(name, depth, _relative(acts_a[name], acts_b[name]), weights.get(name))
                      for depth, name in enumerate(executed))
    return Comparison((left.title, right.title), predictions, same, shared, drift, broken)
