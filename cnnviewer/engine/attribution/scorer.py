"""One prepared scoring model per loaded model, reused by every map, method and image scored with it.

Faithfulness scores run hundreds of perturbed images through the model for each map (deletion /
insertion, ROAD), and the panels score many maps of the same model (7 methods per image, every map
shown, thousands in a folder evaluation). Preparing a fast copy for each map wastes time, so a
`Scorer` keeps them for one model (by its LoadedModel token, device and dtype):

- class targets: a traced, frozen, inference-optimised copy (`torch.jit.trace` + `torch.jit.freeze`
  + `torch.jit.optimize_for_inference`: batch norms folded, convolutions prepacked), prepared from
  the `trace_from`-th map on (it costs ~2 s, more than it saves on one map: see
  benchmarks/bench_faithfulness.py). It is traced on noise and verified against the model itself on
  the first real batch of each shape (softmax within 1e-4), and not used for a model that branches on
  a tensor's value (the tracer's "Python boolean" warning: a trace holds one branch, e.g. a detection
  wrapper's "is the box still detected"); it is also dropped when it turns out no faster than the
  folded copy. Any failure falls back to:
- the folded channels-last copy (`folding.folded_copy` + deep copy), for layer targets with the
  target layer left unfolded (its activations are what is scored).

The model itself is never modified; the copies are rebuilt when its parameters change in place
(version counters) and dropped with the Scorer when another model is scored. Job thread only.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from cnnviewer.engine.attribution.base import _score
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.runtime.folding import folded_copy
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor

TRACE_FROM = 2              # the map from which the traced copy is prepared (1: the first)
TOLERANCE = 1e-4            # largest softmax difference the traced copy may show against the model
SPEED_BATCHES = 3           # timed batches of each before the faster copy is chosen


def fast_copy(model: nn.Module, keep: Iterable[str] = ()) -> tuple[nn.Module, bool]:
    """(the model with batch norms folded, except pairs naming a layer in `keep`, weights channels-last;
    whether the copy is private). Call in eval mode without autograd. A model that cannot be deep
    copied gets the shallow folded copy, which shares its unchanged modules with the model."""
    fast = folded_copy(model, set(keep))
    try:
        return copy.deepcopy(fast).to(memory_format=torch.channels_last), True
    except (RuntimeError, TypeError):
        return fast, False


def class_scores(logits: Tensor, target: Target) -> tuple[np.ndarray, np.ndarray]:
    """(raw target logit, softmax probability of the target) per row of (N, classes) `logits`.

    A class map (N, K, h, w) scores the region the target names (`Target.region_in`, the whole map
    when none): the raw score is the class's logits summed there, as `base._score` and every
    gradient view take it (Seg-Grad-CAM), and p(target) the class's softmax probability (over the
    classes, at each position) averaged there, so a perturbation curve follows that region only.
    """
    logits = logits.float()
    if logits.dim() == 4:
        probabilities = torch.softmax(logits, dim=1)[:, target.class_index]
        scores = logits[:, target.class_index]
        region = target.region_in(*logits.shape[-2:])
        if region is not None:
            y0, x0, y1, x1 = region
            probabilities, scores = probabilities[:, y0:y1, x0:x1], scores[:, y0:y1, x0:x1]
        return scores.flatten(1).sum(dim=1).cpu().numpy(), probabilities.flatten(1).mean(dim=1).cpu().numpy()
    return (logits[:, target.class_index].cpu().numpy(),
            torch.softmax(logits, dim=1)[:, target.class_index].cpu().numpy())


def model_scores(model: nn.Module, batch: Tensor, target: Target) -> tuple[np.ndarray, np.ndarray]:
    """(raw target score, p(target) before normalising a layer target) for each image of `batch`."""
    if target.layer is None:
        return class_scores(_logits(model(batch), batch.shape[0]), target)
    raw = _score(model, batch, target).float().cpu().numpy()
    return raw, raw


def _logits(output, count: int) -> Tensor:
    """(N, classes), or a class map (N, K, h, w) kept as it is (its classes are its channels)."""
    found = first_tensor(output)
    return found if found.dim() == 4 else found.reshape(count, -1)


class _Logits(nn.Module):
    """The model's first output tensor as (N, classes) or (N, K, h, w): what is traced (a tracer wants
    tensors out)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return _logits(self.model(images), images.shape[0])


def _fingerprint(model: nn.Module) -> tuple:
    """Which tensors the model holds and how often each was modified in place (~50 µs)."""
    found = []
    for tensor in (*model.parameters(), *model.buffers()):
        try:
            found.append((id(tensor), tensor._version))
        except RuntimeError:     # an inference tensor has no version counter
            found.append((id(tensor), -1))
    return tuple(found)


class Scorer:
    """The prepared scoring models of one model; see the module docstring. Not thread-safe."""

    def __init__(self, module: nn.Module, token: int | None = None, trace: bool = True,
                 trace_from: int = TRACE_FROM) -> None:
        self.module, self.token, self.trace, self.trace_from = module, token, trace, trace_from
        first = next(iter((*module.parameters(), *module.buffers())), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = first.dtype if first is not None else torch.float32
        self.maps = 0
        self.prepare_ms: dict[str, float] = {}     # "folded" (class target), "folded <layer>", "traced"
        self._reset()

    def _reset(self) -> None:
        self.fallback: str | None = None           # why the traced copy is not used, once it was tried
        self._fingerprint = _fingerprint(self.module)
        self._folded: dict[str | None, tuple[nn.Module, bool]] = {}
        self._traced: torch.jit.ScriptModule | None = None
        self._trace_state = "waiting" if self.trace else "off"     # waiting, on, off
        self._verified: set[tuple[int, ...]] = set()
        self._times: dict[str, list[float]] = {"folded": [], "traced": []}
        self._timed_size = 0

    def allow_trace(self) -> None:
        """Let the traced copy be prepared from now on (it is tried once: a fallback stays)."""
        if not self.trace:
            self.trace = True
            if self._trace_state == "off" and self.fallback is None:
                self._trace_state = "waiting"

    def matches(self, module: nn.Module, token: int | None = None) -> bool:
        """Whether this Scorer scores `module` (same object, token, device and dtype)."""
        first = next(iter((*module.parameters(), *module.buffers())), None)
        return (module is self.module and token == self.token
                and (first is None or (first.device, first.dtype) == (self.device, self.dtype)))

    @property
    def kind(self) -> str:
        """What scores class targets now: "traced" or "folded"."""
        return "traced" if self._trace_state == "on" else "folded"

    def begin_map(self) -> None:
        """Count one more map (the traced copy waits for the `trace_from`-th); rebuild the copies if the
        model's weights changed since they were made."""
        self.maps += 1
        if _fingerprint(self.module) != self._fingerprint:
            self._reset()

    def scores(self, batch: Tensor, target: Target) -> tuple[np.ndarray, np.ndarray]:
        """(raw target score, p(target) before normalising a layer target) for each image of `batch`,
        as `model_scores(module, batch, target)` on the model in eval mode."""
        with torch.inference_mode():
            if target.layer is None:
                if self._trace_state == "waiting" and self.maps >= self.trace_from:
                    self._prepare_trace(batch)
                if self._trace_state == "on":
                    found = self._traced_scores(batch, target)
                    if found is not None:
                        return found
            module, private = self._folded_copy(target.layer)
            start = time.perf_counter()
            if private:
                found = model_scores(module, batch, target)
            else:
                with eval_mode(self.module):
                    found = model_scores(module, batch, target)
            if target.layer is None:
                self._time("folded", batch, start)
            return found

    def _folded_copy(self, layer: str | None) -> tuple[nn.Module, bool]:
        found = self._folded.get(layer)
        if found is None:
            start = time.perf_counter()
            with eval_mode(self.module):
                found = fast_copy(self.module, {layer} if layer else set())
            if found[1]:
                found[0].eval()
            self._folded[layer] = found
            self.prepare_ms["folded" if layer is None else f"folded {layer}"] = (time.perf_counter() - start) * 1e3
        return found

    def _prepare_trace(self, batch: Tensor) -> None:
        """Trace a private copy on noise shaped like `batch`; any failure turns tracing off."""
        start = time.perf_counter()
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                # an `if` on a tensor: a trace holds one branch (a detection wrapper); stop there
                warnings.filterwarnings("error", message=".*Python boolean", category=torch.jit.TracerWarning)
                with eval_mode(self.module):
                    private = copy.deepcopy(self.module)
                private.eval().requires_grad_(False)
                example = torch.randn(batch.shape, dtype=batch.dtype, device=batch.device)
                example = example.contiguous(memory_format=torch.channels_last) if example.dim() == 4 else example
                traced = torch.jit.trace(_Logits(private), example, check_trace=False)
                traced = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
                for _ in range(2):      # the profiling executor specialises on the first runs
                    traced(example)
            self._traced, self._trace_state = traced, "on"
        except Exception as error:  # noqa: BLE001 - any model the tracer cannot handle: the folded copy
            warned = next((e for e in (error, error.__context__, error.__cause__)
                           if isinstance(e, torch.jit.TracerWarning)), None)   # raised through C: SystemError
            self._off("tracing failed: control flow on the data" if warned is not None
                      else f"tracing failed: {type(error).__name__}: {str(error)[:200]}")
        self.prepare_ms["traced"] = (time.perf_counter() - start) * 1e3

    def _traced_scores(self, batch: Tensor, target: Target) -> tuple[np.ndarray, np.ndarray] | None:
        """Scores through the traced copy, verified against the model on the first batch of each shape;
        None (and tracing off) when it fails or disagrees."""
        start = time.perf_counter()
        try:
            logits = self._traced(batch)
        except Exception as error:  # noqa: BLE001
            self._off(f"traced forward failed: {type(error).__name__}: {str(error)[:200]}")
            return None
        shape = tuple(batch.shape)
        if shape in self._verified:
            found = class_scores(logits, target)
            self._time("traced", batch, start)
            return found
        with eval_mode(self.module):
            expected = _logits(self.module(batch), batch.shape[0]).float()
        got = logits.float()
        if got.shape != expected.shape or not torch.allclose(torch.softmax(got, 1), torch.softmax(expected, 1),
                                                             rtol=0.0, atol=TOLERANCE, equal_nan=True):
            difference = (torch.softmax(got, 1) - torch.softmax(expected, 1)).abs().max().item() \
                if got.shape == expected.shape else float("nan")
            self._off(f"the traced copy disagrees with the model on a {shape} batch (softmax {difference:.2g})")
        else:
            self._verified.add(shape)
        return class_scores(expected, target)

    def _time(self, kind: str, batch: Tensor, start: float) -> None:
        """Record the per-image time of a batch of the commonest size; once both copies have a few,
        keep the traced one only if it is faster."""
        if not self._timed_size:
            self._timed_size = batch.shape[0]
        if batch.shape[0] != self._timed_size:
            return
        times = self._times[kind]
        if len(times) >= 32:
            return
        times.append((time.perf_counter() - start) / batch.shape[0])
        if kind == "traced" and len(times) == SPEED_BATCHES and len(self._times["folded"]) >= SPEED_BATCHES:
            traced, folded = statistics.median(times), statistics.median(self._times["folded"])
            if traced >= 0.97 * folded:
                self._off(f"the traced copy is no faster ({traced * 1e3:.1f} vs {folded * 1e3:.1f} ms an image)")

    def _off(self, reason: str) -> None:
        self._traced, self._trace_state, self.fallback = None, "off", reason


__all__ = ["Scorer", "class_scores", "fast_copy", "model_scores"]
