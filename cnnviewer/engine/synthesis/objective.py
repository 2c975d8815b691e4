"""What synthesis maximises: a class score, a channel's mean, one neuron, or a layer's energy.

The network runs only as far as the target needs: a hook on the target module keeps its output
and stops the forward pass there (a class target runs to the logits). The runs use the gradient
views' own `gradient_ready(model)` (eval mode, parameters frozen, every flag put back, also on Stop).
"""

from __future__ import annotations

from torch import Tensor, nn

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import ViewError
from cnnviewer.engine.runtime.outputs import first_tensor


class _Reached(Exception):
    """Raised by the target's hook: the rest of the network is not needed."""


def activation(model: nn.Module, inputs: Tensor, layer: str | None) -> Tensor:
    """The output of `layer` (None: the logits) for `inputs`, the forward stopped right after it."""
    if layer is None:
        return first_tensor(model(inputs))
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ViewError(f"the model has no layer {layer!r}")
    captured: list[Tensor] = []

    def hook(_module, _inputs, output):
        captured.append(first_tensor(output))
        raise _Reached()

    handle = modules[layer].register_forward_hook(hook)
    try:
        model(inputs)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not captured or captured[0] is None:
        raise ViewError(f"{layer} gave no tensor output")
    return captured[0]


def score(model: nn.Module, inputs: Tensor, target: Target) -> Tensor:
    """The objective f(x), one value per batch item.

    class: its pre-softmax score; channel: the mean of its map (a vector layer: its value); neuron:
    a(y, x, c); a layer with no channel (DeepDream): the mean of its squared activations."""
    if target.layer is None:
        return activation(model, inputs, None).reshape(inputs.shape[0], -1)[:, target.class_index]
    out = activation(model, inputs, target.layer)
    if target.channel is None:
        return out.float().pow(2).flatten(1).mean(dim=1)
    if out.dim() == 2:
        return out[:, target.channel]
    if target.neuron is not None:
        y, x = target.neuron
        return out[:, target.channel, y, x]
    return out[:, target.channel].flatten(1).mean(dim=1)
