"""How far a training run moved, checkpoint by checkpoint: weights and activations against the first.

The relative change ||W_k - W_0|| / ||W_0|| (compare.py's measure, scale-free) over all parameters
and per layer, and the relative change of one layer's activation and of the logits on one image,
plus the top-1. One forward per checkpoint, recording only the selected layer. A DriftCache keeps
each checkpoint's numbers (keyed by its path, mtime and size, the first's key, the layer and the
image), so a new checkpoint from Follow costs one read and one forward, not a pass over all; of the
weights it keeps only W_0 and the last vector measured (two float32 copies, not one per checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from threading import Event

import numpy as np
import torch

from cnnviewer.engine.comparison.compare import _relative
from cnnviewer.engine.errors import Cancelled, WeightsError
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.checkpoints import Checkpoint, CheckpointSeries
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.hooks import record_outputs
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.types import LayerId


@dataclass(frozen=True)
class CheckpointDrift:
    """One checkpoint against the run's first readable one (None where it cannot be measured).

    Attributes:
        weights: ||W_k - W_0|| / ||W_0|| over every parameter.
        weights_previous: the same against the checkpoint before it (None for the first).
        layers: (layer, relative weight change) per layer with parameters, in `named_modules` order.
        activation: relative change of `layer`'s activation on the image; logits: of the output.
        error: why the checkpoint could not be read (then every number is None).
    """

    index: int
    checkpoint: Checkpoint
    weights: float | None = None
    weights_previous: float | None = None
    layers: tuple[tuple[LayerId, float | None], ...] = ()
    layer: LayerId | None = None
    activation: float | None = None
    logits: float | None = None
    top1: str | None = None
    top1_index: int | None = None
    probability: float | None = None
    error: str | None = None


def parameter_vector(model: LoadedModel) -> torch.Tensor:
    """Every parameter of the model, flattened into one float32 CPU vector (named_parameters order)."""
    return torch.cat([p.detach().flatten().float().cpu() for _, p in model.module.named_parameters()])


def _run(model: LoadedModel, image: InputImage, layer: LayerId | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, the layer's output) of one forward pass; the model is left without hooks."""
    inputs = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels)
    layers = [layer] if layer and layer in model.layer_names else []
    with torch.inference_mode(), record_outputs(model.module, layers, clone=layers) as recorded:
        output = first_tensor(model.module(inputs.tensor))
    if output is None:
        raise WeightsError(f"{model.name} gives no tensor output")
    return output.float().cpu(), (recorded[layer].float().cpu() if layers and layer in recorded else None)


Key = tuple[str, float, int]   # a checkpoint file as it was listed: (path, mtime, size)


def _key(checkpoint: Checkpoint) -> Key:
    return checkpoint.path, checkpoint.mtime, checkpoint.size


@dataclass
class DriftCache:
    """What series_drift measured, kept across passes (job thread only).

    Attributes:
        weights: (first, checkpoint) -> (||W_k - W_0|| / ||W_0||, per-layer changes).
        previous: (checkpoint before, checkpoint) -> ||W_k - W_k-1|| / ||W_k-1||.
        outputs: (first, checkpoint, layer, image) -> activation/logits change, top-1, probability.
        errors: checkpoint -> why it could not be read (a file written again has a new key).
        reads: checkpoints read and run by series_drift (tests and the benchmark count them).
    """

    weights: dict = field(default_factory=dict)
    previous: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    reads: int = 0
    _base: tuple | None = None       # (first key, vector): W_0 (a copy: never a module the slider may refill)
    _base_run: tuple | None = None   # (first key, layer, image, logits, activation)
    _last: tuple | None = None       # (key, vector): the last vector measured, for weights_previous
    _images: list = field(default_factory=list)   # (image, number): the last few images, by identity

    def image_key(self, image: InputImage) -> int:
        """A number for this image object (kept alive here, so no later image can reuse its id)."""
        for known, number in self._images:
            if known is image:
                return number
        number = self._images[-1][1] + 1 if self._images else 0
        self._images = (self._images + [(image, number)])[-4:]
        return number


def series_drift(series: CheckpointSeries, image: InputImage, layer: LayerId | None = None,
                 cancel: Event | None = None, progress: Callable[[float, str], None] | None = None,
                 cache: DriftCache | None = None) -> Iterator[CheckpointDrift]:
    """Yield each checkpoint's drift against the first readable one, in training order.

    An unreadable checkpoint yields a CheckpointDrift with `error` set; the others go on. With a
    `cache`, a checkpoint measured before (same file, same first, layer and image) is not read again.
    """
    cache = cache if cache is not None else DriftCache()
    image_key = cache.image_key(image)
    checkpoints = list(series.checkpoints)
    first: Key | None = None
    previous: Key | None = None
    total = len(checkpoints)
    for index, checkpoint in enumerate(checkpoints):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if progress is not None:
            progress(index / max(total, 1), f"Checkpoint {index + 1} of {total}")
        key = _key(checkpoint)
        if key in cache.errors:
            yield CheckpointDrift(index, checkpoint, error=cache.errors[key])
            continue
        base = first or key   # the first readable one is measured against itself
        if (base, key) not in cache.weights or (base, key, layer, image_key) not in cache.outputs or (
                previous is not None and (previous, key) not in cache.previous):
            try:
                _measure(series, index, key, first, previous, layer, image, image_key, cache)
            except WeightsError as error:
                cache.errors[key] = str(error)
                yield CheckpointDrift(index, checkpoint, error=str(error))
                continue
        first = first or key
        weights, per_layer = cache.weights[(first, key)]
        activation, logits, top, probability, top1, measured_layer = cache.outputs[(first, key, layer, image_key)]
        yield CheckpointDrift(
            index, checkpoint, weights=weights,
            weights_previous=None if previous is None else cache.previous[(previous, key)],
            layers=per_layer, layer=measured_layer, activation=activation, logits=logits,
            top1=top1, top1_index=top, probability=probability)
        previous = key


def _measure(series: CheckpointSeries, index: int, key: Key, first: Key | None, previous: Key | None,
             layer: LayerId | None, image: InputImage, image_key: tuple, cache: DriftCache) -> None:
    """Read and run checkpoint `index` once and fill every number of it the cache lacks."""
    model = series.model(index, keep=False)
    cache.reads += 1
    logits, acts = _run(model, image, layer)
    vector = parameter_vector(model)
    if first is None:     # this one is the first readable: W_0, and its run, are its own
        first = key
        cache._base = (key, vector)
        cache._base_run = (key, layer, image_key, logits, acts)
    if cache._base is None or cache._base[0] != first:
        cache._base = (first, parameter_vector(_model_of(series, first)))
    base_vector = cache._base[1]
    if (first, key) not in cache.weights:   # per-layer zeros for the first: the same tensors
        cache.weights[(first, key)] = (_relative(base_vector, vector), _layer_drift(model, base_vector, vector))
    if previous is not None and (previous, key) not in cache.previous:
        last = cache._last[1] if cache._last is not None and cache._last[0] == previous else _vector_of(series, previous)
        cache.previous[(previous, key)] = _relative(last, vector)
    cache._last = (key, vector)
    if cache._base_run is None or cache._base_run[:3] != (first, layer, image_key):
        # fetched now, not kept: a model of the series' cache may later be refilled with another checkpoint
        cache._base_run = (first, layer, image_key, *_run(_model_of(series, first), image, layer))
    base_logits, base_acts = cache._base_run[3:]
    probabilities = torch.softmax(logits, dim=-1)[0].numpy() if logits.dim() == 2 else None
    top = int(np.argmax(probabilities)) if probabilities is not None else None
    cache.outputs[(first, key, layer, image_key)] = (
        _relative(base_acts, acts) if acts is not None and base_acts is not None else None,
        _relative(base_logits, logits), top, float(probabilities[top]) if top is not None else None,
        model.label(top) if top is not None else None, layer if acts is not None else None)


def _index_of(series: CheckpointSeries, key: Key) -> int:
    return next(i for i, c in enumerate(series.checkpoints) if _key(c) == key)


def _model_of(series: CheckpointSeries, key: Key) -> LoadedModel:
    return series.model(_index_of(series, key), keep=False)


def _vector_of(series: CheckpointSeries, key: Key) -> torch.Tensor:
    return parameter_vector(_model_of(series, key))


def _layer_drift(model: LoadedModel, base: torch.Tensor, vector: torch.Tensor) -> tuple[tuple[LayerId, float | None], ...]:
    """compare._weight_drift per layer, from the two flat vectors (parameter_vector's order), so W_0
    is kept as one vector and no module of the first checkpoint has to stay alive. A layer's slices
    are its own parameters: the ones named `<layer>.<name>`."""
    spans: dict[LayerId, list[slice]] = {}
    position = 0
    for name, parameter in model.module.named_parameters():
        spans.setdefault(name.rpartition(".")[0], []).append(slice(position, position + parameter.numel()))
        position += parameter.numel()
    return tuple((layer, _relative(torch.cat([base[s] for s in own]), torch.cat([vector[s] for s in own])))
                 for layer, own in spans.items())
