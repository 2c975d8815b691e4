"""Receptive fields of single neurons: the theoretical box and the effective (gradient) map.

The theoretical field comes from the summary's arithmetic (`summary.Field`);
the effective field is |∂a/∂x| of the chosen neuron a = layer[c, y, x] (or the
sum over channels when no channel is chosen), max over RGB, from one backward
pass. The forward pass stops at the chosen layer, so early layers are cheap,
and its graph is kept so further clicks on the same layer cost one backward.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from cnnviewer.engine.errors import ViewError
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.structure.summary import Field
from cnnviewer.engine.types import LayerId


class _Stop(Exception):
    """Raised by the layer hook: nothing after the chosen layer needs computing."""


@dataclass(frozen=True, eq=False)
class NeuronField:
    """What the receptive-field panel draws for one neuron.

    Attributes:
        layer, neuron, channel: the neuron (channel None: all channels summed).
        display: (S, S, 3) uint8 crop the model saw.
        effective: (S, S) float32 |gradient|, max over RGB, scaled to 0..1.
        box: theoretical field (top, left, bottom, right) in crop pixels; may extend past the
            crop, where it falls on zero padding.
        field: the layer's Field (size, jump, start, whole).
        layer_shape: (C, h, w) of the layer, for clicking neurons.
        milliseconds: time of the gradient computation.
    """

    layer: LayerId
    neuron: tuple[int, int]
    channel: int | None
    display: np.ndarray
    effective: np.ndarray
    box: tuple[float, float, float, float]
    field: Field
    layer_shape: tuple[int, ...]
    milliseconds: float

    @property
    def effective_extent(self) -> tuple[int, int, int, int] | None:
        """(top, left, bottom, right) of the pixels with non-zero gradient, or None."""
        rows = np.flatnonzero(self.effective.max(axis=1) > 0)
        cols = np.flatnonzero(self.effective.max(axis=0) > 0)
        if rows.size == 0:
            return None
        return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


class GradientProbe:
    """Keeps the autograd graph of (model, image, layer) so each new neuron costs one backward."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._inputs: torch.Tensor | None = None
        self._output: torch.Tensor | None = None
        self._display: np.ndarray | None = None

    def _forward(self, model: LoadedModel, image: InputImage, layer: LayerId) -> None:
        key = (model.token, id(image), layer)
        if key == self._key:
            return
        self._key = None
        prepared = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels)
        inputs = prepared.tensor.detach().clone().requires_grad_(True)
        module = dict(model.module.named_modules())[layer]
        captured: dict[str, torch.Tensor] = {}

        def hook(_module, _inputs, output):
            captured["output"] = output if isinstance(output, torch.Tensor) else output[0]
            raise _Stop

        with eval_mode(model.module), module.register_forward_hook(hook), torch.enable_grad():
            try:
                model.module(inputs)
            except _Stop:
                pass
        if "output" not in captured:
            raise ValueError(f"layer {layer!r} did not run")
        self._inputs, self._output, self._display = inputs, captured["output"], prepared.display
        self._key = key

    def field(self, model: LoadedModel, image: InputImage, layer: LayerId, neuron: tuple[int, int],
              channel: int | None, theoretical: Field) -> NeuronField:
        """The effective map and theoretical box of one neuron."""
        start = time.perf_counter()
        self._forward(model, image, layer)
        output = self._output
        if output.dim() != 4:
            raise ViewError(f"{layer} has no spatial output (shape {tuple(output.shape[1:])}): "
                            "choose a convolutional layer")
        height, width = output.shape[-2:]
        y, x = min(max(neuron[0], 0), height - 1), min(max(neuron[1], 0), width - 1)
        target = output[0, channel, y, x] if channel is not None else output[0, :, y, x].sum()
        (gradient,) = torch.autograd.grad(target, self._inputs, retain_graph=True)
        effective = gradient[0].abs().amax(dim=0).float().cpu().numpy()
        peak = float(effective.max())
        if peak > 0:
            effective = effective / peak
        return NeuronField(layer, (y, x), channel, self._display, np.ascontiguousarray(effective, np.float32),
                           theoretical.box(y, x), theoretical, tuple(output.shape[1:]),
                           (time.perf_counter() - start) * 1000.0)

    def clear(self) -> None:
        """Free the kept graph."""
        self._key = self._inputs = self._output = self._display = None
