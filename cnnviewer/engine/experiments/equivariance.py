"""Equivariance and invariance, layer by layer: transform the input and compare what every layer makes.

The lecture notes' "Equivariance vs. Invariance": a convolution's raw map moves with its input, a
pooled one does not. For a transform T of the input (shift, horizontal flip, small rotation, scale)
and each layer φ the probe measures
  (i) equivariance error ‖φ(T x) − T′ φ(x)‖ / ‖T′ φ(x)‖ over the interior of the map, T′ being the same
      transform in the layer's coordinates (Lenc & Vedaldi 2015): a map position sits at
      start + i·jump input pixels (the receptive-field module's Field), so a shift of s px is a shift of
      s / jump positions, exact when s is a multiple of the jump and undefined (NaN) otherwise; flips
      mirror about the map's centre, rotations and scalings resample the map bilinearly;
 (ii) invariance: the cosine similarity of the globally pooled features of φ(x) and φ(T x);
(iii) map similarity: the cosine of φ(x) and φ(T x) position for position, nothing moved back. Global
      pooling makes (ii) close to 1 at every depth; (iii) shows the notes' picture: early maps move
      with the input (low), deep ones with large fields and few positions barely change (high).
The original and the transformed inputs run in batches of four; forward hooks owned by an ExitStack (the
recorder's way) take each statistic as a layer returns, so the model keeps no hook, its modes and
requires_grad are as found, and nine images' outputs are never held at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.experiments import equivariance_why
from cnnviewer.engine.experiments.equivariance_maps import (
    TRANSFORMS,
    cached_plan,
    compare,
    integral,
    transformed_inputs,
)
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.types import LayerId

__all__ = ["TRANSFORMS", "ProbeResult", "default_amounts", "mean_result", "probe", "transformed_inputs"]
BOUNDARIES = ("crop", "wrap")
DEFAULT_ROTATIONS = (-10.0, -5.0, -2.0, -1.0, 1.0, 2.0, 5.0, 10.0)
DEFAULT_SCALES = (0.8, 0.9, 0.95, 1.05, 1.1, 1.25)


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """Per layer (depth order) and per amount: equivariance error and pooled-feature invariance."""

    transform: str
    amounts: tuple[float, ...]
    layers: tuple[LayerId, ...]
    jumps: tuple[float | None, ...]        # each layer's jump along x in input px; None: no map (whole image)
    equivariance: np.ndarray               # (L, A) float; NaN where undefined
    invariance: np.ndarray                 # (L, A) cosine similarity of pooled features
    top1: tuple[int, ...]                  # the transformed inputs' top-1 class, per amount
    seconds: float
    forwards: int                          # images run through the model (the original + one per amount)
    boundary: str = "crop"
    reference_top1: int = -1               # the untransformed input's top-1
    labels: tuple[str, ...] = ()           # top1's class names
    layer_types: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()          # why(layer), per layer
    model: str = ""
    image: str = ""
    # (L, A) cosine of φ(x) and φ(T x) position for position, nothing moved back: low for a map that
    # moves with its input (equivariant, not invariant), 1 for one that stays put (invariant)
    map_similarity: np.ndarray | None = None

    def why(self, layer: LayerId) -> str:
        """Hover text: why this layer is (or is not) equivariant / invariant to this transform."""
        return self.reasons[self.layers.index(layer)] if layer in self.layers else ""

    def to_json(self) -> dict:
        """Plain JSON (NaN as null)."""
        def clean(values: np.ndarray) -> list:
            return [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in values]
        return {"transform": self.transform, "boundary": self.boundary, "model": self.model, "image": self.image,
                "amounts": list(self.amounts), "layers": list(self.layers), "layer_types": list(self.layer_types),
                "jumps": list(self.jumps), "equivariance_error": clean(self.equivariance),
                "invariance_cosine": clean(self.invariance),
                "map_similarity": clean(self.map_similarity) if self.map_similarity is not None else None,
                "top1": list(self.top1), "top1_labels": list(self.labels),
                "reference_top1": self.reference_top1, "why": list(self.reasons),
                "seconds": round(self.seconds, 4), "forwards": self.forwards}


def default_amounts(transform: str, jumps: Sequence[float], size: int) -> tuple[float, ...]:
    """Eight shifts (1, 2, 3 px and the layers' jumps, then multiples of the deepest jump), eight small
    rotations, six scales, or the one flip."""
    if transform == "flip":
        return (1.0,)
    if transform == "rotate":
        return DEFAULT_ROTATIONS
    if transform == "scale":
        return DEFAULT_SCALES
    whole = [int(j) for j in jumps if j == int(j) and 1 <= j <= size / 4]
    deepest = max(whole, default=1)
    found = {1, 2, 3} | set(whole)
    multiple = 2
    while len(found) < 8 and deepest * multiple <= size / 3:
        found.add(deepest * multiple)
        multiple += 1
    step = 4
    while len(found) < 8:
        found.add(step)
        step += 1
    found = sorted(found)
    return tuple(float(v) for v in found[:8])


def _pooled(tensor: Tensor, channels_last: bool) -> Tensor:
    """(N, F): global average over positions (maps), tokens, or the vector itself."""
    if tensor.dim() == 4:
        return tensor.mean(dim=(1, 2) if channels_last else (2, 3))
    if tensor.dim() == 3:
        return tensor.mean(dim=1)
    return tensor.reshape(tensor.shape[0], -1)


def _post_order(model: nn.Module) -> list[LayerId]:
    """Every module after the modules inside it: a block's output follows its last layer's."""
    order: list[LayerId] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            visit(child, f"{prefix}.{name}" if prefix else name)
        if prefix:
            order.append(prefix)
    visit(model, "")
    return order


def _spatial(tensor: Tensor, channels_last: bool) -> Tensor | None:
    """(N, C, H, W) for a map, else None."""
    if tensor.dim() != 4:
        return None
    tensor = tensor.permute(0, 3, 1, 2) if channels_last else tensor
    return tensor if tensor.shape[-1] > 1 or tensor.shape[-2] > 1 else None


@contextmanager
def _streaming(model: nn.Module, names: Sequence[LayerId],
               on_output: Callable[[LayerId, Tensor], None]) -> Iterator[None]:
    """Hand each layer's output to `on_output` the moment the layer returns it, while inside.

    The recorder's way (hooks owned by an ExitStack: none is left after an exception or a cancel),
    but streaming: every statistic is taken before a later in-place op (ReLU6(inplace=True)) could
    overwrite the tensor, and nothing of nine images' ~150 outputs is kept (a quarter of the cost).
    """
    modules = dict(model.named_modules())

    def make(name: LayerId):
        def hook(_module: nn.Module, _inputs, output) -> None:
            tensor = first_tensor(output)
            if tensor is not None:
                on_output(name, tensor.detach())
        return hook

    with ExitStack() as stack:
        for name in names:
            stack.callback(modules[name].register_forward_hook(make(name)).remove)
        yield


class _Probe:
    """Per-layer statistics, filled by the streaming hook one batch at a time."""

    def __init__(self, fields: dict, channels_last: frozenset, transform: str, amounts: tuple, size: int, wrap: bool,
                 separable: bool, whole_steps_only: bool, dedupe: bool, containers: frozenset = frozenset(),
                 similarity: bool = True) -> None:
        self.similarity = similarity
        self.cancel: threading.Event | None = None
        self.progress: Callable[[int], None] | None = None
        self.seen, self.every = 0, 16   # hook calls so far in this pass; report every `every`
        self.fields, self.channels_last, self.size = fields, channels_last, size
        self.transform, self.amounts = transform, amounts
        self.options = (wrap, separable, whole_steps_only)
        self.plans: dict[tuple[LayerId, int], object] = {}
        self.dedupe, self.last_key, self.duplicates, self.containers = dedupe, None, set(), containers
        self.reference: dict[tuple[LayerId, int], tuple] = {}
        self.rows: dict[LayerId, dict[int, tuple[float, float, float]]] = {}   # amount index -> values
        self.calls: dict[LayerId, int] = {}
        self.done, self.first = 0, True

    def __call__(self, name: LayerId, tensor: Tensor) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()     # from inside the forward: the hooks go with the ExitStack
        call = self.calls[name] = self.calls.get(name, -1) + 1   # a module run twice (ResNet's relu)
        self.seen += 1
        if self.progress is not None and self.seen % self.every == 0:
            self.progress(self.seen)
        if self.first:
            key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.storage_offset())
            previous, self.last_key = self.last_key, key
            if self.dedupe and call == 0 and key == previous and name in self.containers:
                self.duplicates.add(name)   # a block returning its last layer's very tensor (still alive)
                return
            reference = tensor[:1].float().clone()
            flat = reference.reshape(-1)
            ref_map = _spatial(reference, name in self.channels_last)
            energy = integral(ref_map[0].square().sum(dim=0)) if ref_map is not None else None
            self.reference[(name, call)] = (reference, _pooled(reference, name in self.channels_last),
                                            flat / torch.linalg.vector_norm(flat).clamp_min(1e-30), energy)
            moved = tensor[1:].float()
        elif name in self.duplicates:
            return
        else:
            moved = tensor.float()
        reference, pooled, unit, energy = self.reference[(name, call)]
        last = name in self.channels_last
        invariance = F.cosine_similarity(_pooled(moved, last), pooled.expand(len(moved), -1), dim=1, eps=1e-12)
        if self.similarity:
            flat = moved.reshape(len(moved), -1)
            similarity = ((flat @ unit) / torch.linalg.vector_norm(flat, dim=1).clamp_min(1e-30)).tolist()
        else:
            similarity = [float("nan")] * len(moved)
        ref_map, moved_map, field = _spatial(reference, last), _spatial(moved, last), self.fields.get(name)
        row = self.rows.setdefault(name, {})
        for k in range(len(moved)):
            index = self.done + k
            error = float("nan")
            if ref_map is not None and moved_map is not None and field is not None and not field.whole:
                plan = self.plans.get((name, index), False)
                if plan is False:
                    plan = self.plans[(name, index)] = cached_plan(
                        field, ref_map.shape[-2], ref_map.shape[-1], self.transform, self.amounts[index], self.size,
                        *self.options)
                error = compare(ref_map[0], moved_map[k], plan, energy)
            row[index] = (error, float(invariance[k]), similarity[k])


def _check_amounts(transform: str, amounts: tuple[float, ...], size: int) -> None:
    """Refuse amounts that mean nothing or would ask for a huge view of the photo (a shift of 1e7 px,
    a scale of 1e-6): the larger view is allocated before any forward pass."""
    import math
    if not all(math.isfinite(a) for a in amounts):
        raise ValueError("amounts must be finite numbers")
    limits = {"shift": (-size, size, f"shifts between -{size} and {size} px (the crop's side)"),
              "rotate": (-180.0, 180.0, "rotations between -180 and 180 degrees"),
              "scale": (0.1, 10.0, "scale factors between 0.1 and 10")}
    if transform in limits:
        low, high, text = limits[transform]
        if not all(low <= a <= high for a in amounts):
            raise ValueError(f"{transform}: choose {text}")


def probe(model: LoadedModel, image: InputImage, transform: str = "shift", amounts: Sequence[float] | None = None,
          *, layers: Sequence[LayerId] | None = None, boundary: str = "crop", summary=None, batch: int = 4,
          map_similarity: bool = True,
          cancel: threading.Event | None = None, progress: Callable[[float], None] | None = None) -> ProbeResult:
    """Equivariance error and invariance of every layer (or `layers`) to `transform` of `image`.

    Args:
        transform: 'shift' (px, horizontal), 'flip' (horizontal), 'rotate' (degrees), 'scale' (factors).
        amounts: default: `default_amounts` (shifts include multiples of the deep layers' jumps).
        layers: module names; default every module with an output of its own, in depth order.
        boundary: 'crop' moves the crop window inside a larger view of the photo (new content enters:
            a real translation); 'wrap' rolls the crop circularly (exact for circular padding).
        summary: the model's structure.summary.Summary (Workbench.summary), else computed here.
        batch: transformed images per forward pass (the first pass also carries the original). 4, not 8:
            on one CPU thread MobileNetV2's expanded maps for 9 images overflow the caches, and a batch of 9
            took 35 ms per image against 21 ms alone; 4 measured ~15% faster than 8 over the whole probe.
        map_similarity: also the raw maps' cosine (two more passes over every output, ~15 % of the run);
            False leaves `map_similarity` None.
    """
    start_time = time.perf_counter()
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose {', '.join(TRANSFORMS)}")
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; choose crop or wrap")
    if boundary == "wrap" and transform in ("rotate", "scale"):
        raise ValueError("wrap applies to shifts (and flips); rotations and scalings read the larger view")
    size = model.preprocess.crop_size
    if summary is None:
        from cnnviewer.engine.structure.summary_graph import summarize
        summary = summarize(model.module, (size, size), name=model.name, channels=model.input_channels)
    fields = summary.fields
    if amounts is None:
        amounts = default_amounts(transform, [f.jump[1] for f in fields.values() if not f.whole], size)
    amounts = tuple(float(a) for a in amounts)
    if not amounts:
        raise ValueError("no amounts to probe")
    _check_amounts(transform, amounts, size)
    modules = dict(model.module.named_modules())
    if layers is not None:
        unknown = [name for name in layers if name not in modules or name == ""]
        if unknown:
            raise ValueError(f"no layer named {unknown[0]!r} in {model.name}")
    order = _post_order(model.module) or [""]   # a bare layer as the model: itself
    candidates = order if layers is None else [name for name in order if name in set(layers)]   # depth order
    inputs = transformed_inputs(model, image, transform, amounts, boundary)
    state = _Probe(fields, summary.channels_last, transform, amounts, size,
                   wrap=boundary == "wrap" and transform == "shift", separable=transform != "rotate",
                   whole_steps_only=transform == "shift", dedupe=layers is None,
                   containers=frozenset(name for name, m in modules.items() if next(m.children(), None) is not None),
                   similarity=map_similarity)
    top1: list[int] = []
    reference_top1 = -1
    total = len(amounts)
    calls_per_pass = len(candidates)
    state.cancel, state.every = cancel, max(1, calls_per_pass // 8)   # about eight reports per pass
    if progress is not None:    # within a pass: the share of its layers done
        state.progress = lambda seen: progress(min(0.99, (state.done + min(batch, total - state.done) *
                                                           min(1.0, seen / calls_per_pass)) / total))
    with eval_mode(model.module), torch.inference_mode(), _streaming(model.module, candidates, state):
        while state.done < total:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            count = min(batch, total - state.done)
            chunk = inputs[:1 + count] if state.first else inputs[1 + state.done:1 + state.done + count]
            state.calls.clear()
            state.seen = 0
            logits = first_tensor(model.module(chunk))
            tops = (logits.reshape(logits.shape[0], -1).argmax(dim=1).tolist() if logits is not None
                    else [-1] * len(chunk))
            if state.first:
                reference_top1, tops = tops[0], tops[1:]
            top1.extend(tops)
            state.first = False
            state.done += count
            if progress is not None:
                progress(state.done / total)
    chosen = [name for name in candidates if name in state.rows]
    if layers is not None and len(chosen) < len(layers):
        missing = next(name for name in layers if name not in state.rows)
        raise ValueError(f"layer {missing!r} produced no tensor output")
    values = np.array([[state.rows[name][k] for k in range(total)] for name in chosen],
                      dtype=np.float64).reshape(len(chosen), total, 3)
    jumps = tuple(None if name not in fields or fields[name].whole else float(fields[name].jump[1])
                  for name in chosen)
    return ProbeResult(
        transform=transform, amounts=amounts, layers=tuple(chosen), jumps=jumps,
        equivariance=values[..., 0], invariance=values[..., 1],
        map_similarity=values[..., 2] if map_similarity else None,
        top1=tuple(top1), seconds=time.perf_counter() - start_time, forwards=1 + total, boundary=boundary,
        reference_top1=reference_top1, labels=tuple(model.label(i) for i in top1),
        layer_types=tuple(type(modules[name]).__name__ for name in chosen),
        reasons=tuple(equivariance_why.why(modules[name], fields.get(name), transform, boundary) for name in chosen),
        model=model.title, image=image.name)


def mean_result(results: Sequence[ProbeResult], name: str = "") -> ProbeResult:
    """The mean over images of probes with the same layers and amounts (NaN-aware: a cell is NaN only
    where every image's is); top-1 classes are those of the first image."""
    import dataclasses
    import warnings

    first = results[0]
    if any(r.layers != first.layers or r.amounts != first.amounts for r in results):
        raise ValueError("the images gave different layers or amounts")

    def mean(field: str) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN cells stay NaN
            return np.nanmean(np.stack([getattr(r, field) for r in results]), axis=0)

    return dataclasses.replace(first, equivariance=mean("equivariance"), invariance=mean("invariance"),
                               map_similarity=mean("map_similarity"), seconds=sum(r.seconds for r in results),
                               forwards=sum(r.forwards for r in results), image=name or f"{len(results)} images")
