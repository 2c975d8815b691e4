"""What every attribution method shares: the target's score, and a model ready for input gradients.

Apart from gradients.py so the CAMs, SmoothGrad and the faithfulness scorer can use them without
importing each other (the dispatch over every method lives in methods.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor


@contextmanager
def gradient_ready(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters inside; every flag restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model):
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        try:
            with torch.enable_grad():
                yield
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)


def _score(model: nn.Module, inputs: Tensor, target: Target) -> Tensor:
    """Run the model and return the target, one value per batch item."""
    if target.layer is None:
        output = first_tensor(model(inputs))
        if output.dim() == 4:     # a class map (N, K, h, w): the class's scores summed over the region
            scores = output[:, target.class_index]
            region = target.region_in(*output.shape[-2:])
            if region is not None:
                y0, x0, y1, x1 = region
                scores = scores[:, y0:y1, x0:x1]
            return scores.flatten(1).sum(dim=1)
        return output.reshape(output.shape[0], -1)[:, target.class_index]
    captured: dict[str, Tensor] = {}
    module = dict(model.named_modules())[target.layer]

    def hook(_module, _inputs, output):
        captured["out"] = first_tensor(output)

    with module.register_forward_hook(hook):
        model(inputs)
    out = captured["out"]
    if out.dim() == 2:
        return out[:, target.channel]
    if target.neuron is None:
        return out[:, target.channel].flatten(1).sum(dim=1)
    y, x = target.neuron
    return out[:, target.channel, y, x]
