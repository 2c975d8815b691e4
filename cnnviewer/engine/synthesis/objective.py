"""What synthesis maximises: a class score, a channel's mean, one neuron, or a layer's energy.

The network runs only as far as the target needs: a hook on the target module keeps its output
and stops the forward pass there (a class target runs to the logits). The runs use the gradient
views' own `gradient_ready(model)` (eval mode, parameters frozen, every flag put back, also on Stop).

Speed (benchmarks/bench_synthesis.py; MobileNetV2's CPU step is memory-bound, each elementwise pass
over an activation and its gradient costing about what a convolution does): `synthesis_view` is the
model as the runs evaluate it, the same function with fewer passes. Each BatchNorm that directly
follows a convolution (inside an nn.Sequential, or in torchvision's ResNets) is folded into
a copy of that convolution, as inference engines do (equal up to float rounding: activations agree
to about 1e-6 of their range; an ascent's images then drift apart as under any change of float sums);
in-place Hardtanh/ReLU6 run out of place, which spares autograd the copy of their input that their
backward would otherwise keep. The original model is not touched. On the CPU the input also goes in
channels-last, its convolutions' weights too (else each call copies its weight so). A strided
convolution on the image's few channels gets a faster input gradient (`image_conv.py`). Fourier ascent,
1 thread, 224 px: MobileNetV2 to features.10 21.9 -> 35.4 steps/s, ResNet-18 to layer3 12.8 -> 16.8.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import Tensor, nn

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import ViewError
from cnnviewer.engine.runtime.folding import fold_norms, with_children
from cnnviewer.engine.runtime.folding import has_hooks as _has_hooks
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.synthesis.image_conv import image_conv, suits


class _Reached(Exception):
    """Raised by the target's hook: the rest of the network is not needed."""


def layer_module(model: nn.Module, layer: str) -> nn.Module:
    """The module named `layer`; the engines look it up once per run, not once per step."""
    module = dict(model.named_modules()).get(layer)
    if module is None:
        raise ViewError(f"the model has no layer {layer!r}")
    return module


def _fast_conv(conv: nn.Conv2d, copied: bool) -> nn.Conv2d:
    """`conv` with its weight channels-last, as its input is: else every call copies the weight so."""
    if not copied:
        conv = copy.copy(conv)
        conv._parameters = OrderedDict(conv._parameters)
    conv.weight = nn.Parameter(conv.weight.detach().contiguous(memory_format=torch.channels_last), requires_grad=False)
    return conv


def _view(module: nn.Module, name: str, keep: str | None) -> nn.Module:
    children = {child_name: child for child_name, child in module._modules.items() if child is not None}
    changed = {}
    for child_name, child in children.items():
        full = f"{name}.{child_name}" if name else child_name
        new = _view(child, full, keep)
        if isinstance(new, nn.Hardtanh) and new.inplace and not _has_hooks(new):
            new = copy.copy(new)
            new.inplace = False
        if new is not child:
            changed[child_name] = new
    fold_norms(module, name, changed, () if keep is None else (keep,))
    for child_name, child in children.items():
        conv = changed.get(child_name, child)
        if type(conv) is nn.Conv2d and conv.weight.device.type == "cpu" and not _has_hooks(conv):
            conv = changed[child_name] = _fast_conv(conv, copied=child_name in changed)
            if suits(conv):
                changed[child_name] = image_conv(conv)
    return with_children(module, changed)


def synthesis_view(model: nn.Module, layer: str | None, probe: Tensor) -> tuple[nn.Module, nn.Module | None]:
    """(root, the target layer's module in it): `model` with its BatchNorms folded (see above).

    Call inside `gradient_ready` (eval mode: a norm is folded with its running statistics) and keep
    the result for the run. Unchanged modules are shared, not copied; the target layer itself is
    never folded. The view must give the model's own target activation for `probe` (an input):
    a model whose code reads a folded norm's output some other way, or relies on an in-place
    activation overwriting its input, fails that check and runs as it is."""
    with torch.no_grad():
        root = _view(model, "", layer)
        if root is not model:
            try:
                expected = activation(model, probe, layer).float()
                got = activation(root, fast_layout(probe), layer, layer_module(root, layer) if layer else None).float()
                same = got.shape == expected.shape and bool(
                    (got - expected).abs().max() <= 1e-3 * expected.abs().max() + 1e-6)
            except Exception:   # noqa: BLE001 - any failure of the view: run the model as it is
                same = False
            root = root if same else model
    return root, layer_module(root, layer) if layer is not None else None


def fast_layout(inputs: Tensor) -> Tensor:
    """`inputs` in the memory layout the convolutions run fastest in (channels-last on the CPU)."""
    if inputs.device.type == "cpu" and inputs.dim() == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def activation(model: nn.Module, inputs: Tensor, layer: str | None, module: nn.Module | None = None) -> Tensor:
    """The output of `layer` (None: the logits) for `inputs`, the forward stopped right after it.

    `module`: the layer's module when the caller has already looked it up."""
    if layer is None:
        return first_tensor(model(inputs))
    module = module if module is not None else layer_module(model, layer)
    captured: list[Tensor] = []

    def hook(_module, _inputs, output):
        captured.append(first_tensor(output))
        raise _Reached()

    handle = module.register_forward_hook(hook)
    try:
        model(inputs)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not captured or captured[0] is None:
        raise ViewError(f"{layer} gave no tensor output")
    return captured[0]


def score(model: nn.Module, inputs: Tensor, target: Target, module: nn.Module | None = None) -> Tensor:
    """The objective f(x), one value per batch item.

    class: its pre-softmax score; channel: the mean of its map (a vector layer: its value); neuron:
    a(y, x, c); a layer with no channel (DeepDream): the mean of its squared activations.
    `module`: the target layer's module, when already looked up."""
    if target.layer is None:
        logits = activation(model, inputs, None).reshape(inputs.shape[0], -1)
        _check_index("class", target.class_index, logits.shape[1])
        return logits[:, target.class_index]
    out = activation(model, inputs, target.layer, module)
    if target.channel is None:
        return out.float().pow(2).flatten(1).mean(dim=1)
    _check_index(f"{target.layer} channel", target.channel, out.shape[1])
    if out.dim() == 2:
        return out[:, target.channel]
    if target.neuron is not None:
        y, x = target.neuron
        _check_index(f"{target.layer} neuron y", y, out.shape[-2], f" at a {inputs.shape[-1]} px input")
        _check_index(f"{target.layer} neuron x", x, out.shape[-1], f" at a {inputs.shape[-1]} px input")
        return out[:, target.channel, y, x]
    return out[:, target.channel].flatten(1).mean(dim=1)


def _check_index(what: str, value: int | None, count: int, where: str = "") -> None:
    """Refuse a unit outside the layer: Python's negative indexing would silently pick another one
    (class -1 is class 999), and one past the end would end in an IndexError traceback."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < count:
        raise ViewError(f"{what} {value!r} is out of range: the model has 0..{count - 1}{where}")
