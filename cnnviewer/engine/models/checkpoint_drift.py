"""How far a training run moved, checkpoint by checkpoint: weights and activations against the first.

The relative change ||W_k - W_0|| / ||W_0|| (compare.py's measure, scale-free) over all parameters
and per layer, and the relative change of one layer's activation and of the logits on one image,
plus the top-1. One forward per checkpoint, recording only the selected layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from threading import Event

import numpy as np
import torch

from cnnviewer.engine.comparison.compare import _relative, _weight_drift
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


def series_drift(series: CheckpointSeries, image: InputImage, layer: LayerId | None = None,
                 cancel: Event | None = None,
                 progress: Callable[[float, str], None] | None = None) -> Iterator[CheckpointDrift]:
    """Yield each checkpoint's drift against the first readable one, in training order.

    An unreadable checkpoint yields a CheckpointDrift with `error` set; the others go on.
    """
    first: tuple[LoadedModel, torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
    previous: torch.Tensor | None = None
    total = len(series)
    for index, checkpoint in enumerate(list(series.checkpoints)):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if progress is not None:
            progress(index / max(total, 1), f"Checkpoint {index + 1} of {total}")
        try:
            model = series.model(index, keep=False)
            logits, acts = _run(model, image, layer)
        except WeightsError as error:
            yield CheckpointDrift(index, checkpoint, error=str(error))
            continue
        vector = parameter_vector(model)
        if first is None:
            first = (model, vector, logits, acts)
        base, base_vector, base_logits, base_acts = first
        per_layer = _weight_drift(base, model)   # zeros for the first: the same tensors
        probabilities = torch.softmax(logits, dim=-1)[0].numpy() if logits.dim() == 2 else None
        top = int(np.argmax(probabilities)) if probabilities is not None else None
        yield CheckpointDrift(
            index, checkpoint,
            weights=_relative(base_vector, vector),
            weights_previous=None if previous is None else _relative(previous, vector),
            layers=tuple(per_layer.items()), layer=layer if acts is not None else None,
            activation=_relative(base_acts, acts) if acts is not None and base_acts is not None else None,
            logits=_relative(base_logits, logits),
            top1=model.label(top) if top is not None else None, top1_index=top,
            probability=float(probabilities[top]) if top is not None else None)
        previous = vector
