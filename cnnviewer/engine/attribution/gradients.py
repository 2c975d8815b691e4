"""Gradient views: saliency, guided backprop, DeconvNet, Grad-CAM, integrated gradients, occlusion.

Definitions follow the lecture notes and their papers:

- saliency (Simonyan et al.): |∂score/∂x|, max over RGB;
- guided backprop (Springenberg et al.): through every ReLU, pass only positive
  gradients where the forward input was positive;
- DeconvNet (Zeiler & Fergus): through every ReLU, apply ReLU to the backward
  signal only (ignoring the forward input); max pooling routes the signal
  through its recorded switches, which is what autograd's max-pool backward does;
- Grad-CAM (Selvaraju et al.), integrated gradients (Sundararajan et al.,
  Gauss-Legendre steps as Captum), occlusion (Zeiler & Fergus): the drop of the
  target when a patch is covered.

Every ReLU the forward pass executes is intercepted with a TorchFunctionMode
(module ReLUs, functional `F.relu` in GoogLeNet/Inception/DenseNet, in-place
`relu_`, ReLU6 as `hardtanh(0, 6)`), not by swapping modules, so functional
calls are caught too. The model is left exactly as it was: no hooks stay,
`requires_grad` flags and training modes are restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from threading import Event
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.types import LayerId

Method = Literal["saliency", "guided-backprop", "deconvnet", "grad-cam", "integrated-gradients", "occlusion"]
METHODS: tuple[str, ...] = ("saliency", "guided-backprop", "deconvnet", "grad-cam", "integrated-gradients",
                            "occlusion")


@dataclass(frozen=True)
class Target:
    """What the gradient is taken of: a class score, a channel's sum, or one neuron.

    A class target uses the model's output (pre-softmax score); a layer target
    uses that module's output: the whole channel summed, or a(y, x, c).
    """

    class_index: int | None = None
    layer: LayerId | None = None
    channel: int | None = None
    neuron: tuple[int, int] | None = None

    def describe(self) -> str:
        if self.layer is None:
            return f"class {self.class_index}"
        where = f" at (y={self.neuron[0]}, x={self.neuron[1]})" if self.neuron else ""
        return f"{self.layer} channel {self.channel}{where}"


# --------------------------------------------------------------------------- ReLU rules

class _GuidedReLU:
    """Guided backprop: the ReLU's own backward (zero where the input was not positive),
    fed only the positive part of the incoming gradient by a hook on its output.

    A hook, not a Python autograd Function: the masking stays in torch's own
    backward, which keeps guided backprop as cheap as a plain backward pass.
    """

    @staticmethod
    def call(func, args, kwargs) -> Tensor:
        output = func(*args, **kwargs)
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(_positive)
        return output


def _positive(grad: Tensor) -> Tensor:
    return grad.clamp(min=0)


class _DeconvFunction(torch.autograd.Function):
    """ReLU whose backward is a ReLU of the backward signal (the forward input is ignored)."""

    @staticmethod
    def forward(ctx, x: Tensor, low: float, high: float) -> Tensor:
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad.clamp(min=0), None, None


class _DeconvReLU:
    """DeconvNet: replace the ReLU by one whose backward ignores the forward input."""

    @staticmethod
    def call(func, args, kwargs, low: float = 0.0, high: float = float("inf")) -> Tensor:
        return _DeconvFunction.apply(args[0], low, high)


_RELU_FUNCTIONS = {torch.relu, torch.relu_, F.relu, torch.Tensor.relu, torch.Tensor.relu_}
_HARDTANH_FUNCTIONS = {F.hardtanh, F.relu6, torch._C._nn.hardtanh, torch._C._nn.hardtanh_}


class _ReluRule(TorchFunctionMode):
    """Route every ReLU-like call through `rule` while active."""

    def __init__(self, rule) -> None:
        super().__init__()
        self.rule = rule
        self.seen = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_FUNCTIONS:
            self.seen += 1
            if self.rule is _DeconvReLU:
                return _DeconvReLU.call(func, args, kwargs)
            return self.rule.call(func, args, kwargs)
        if func in _HARDTANH_FUNCTIONS:
            low = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            high = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            if func is F.relu6:
                low, high = 0.0, 6.0
            if low == 0.0:   # ReLU6 and clipped ReLUs; a symmetric hardtanh is not a ReLU
                self.seen += 1
                if self.rule is _DeconvReLU:
                    return _DeconvReLU.call(func, args, kwargs, float(low), float(high))
                return self.rule.call(func, args, kwargs)
        return func(*args, **kwargs)


# --------------------------------------------------------------------------- plumbing

@contextmanager
def _gradient_ready(model: nn.Module) -> Iterator[None]:
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


def input_gradient(model: nn.Module, inputs: Tensor, target: Target, rule=None) -> Tensor:
    """∂target/∂input for a (N, C, H, W) batch, optionally with a ReLU backward rule."""
    with _gradient_ready(model):
        x = inputs.detach().clone().requires_grad_(True)
        if rule is None:
            score = _score(model, x, target)
        else:
            with _ReluRule(rule):
                score = _score(model, x, target)
        (gradient,) = torch.autograd.grad(score.sum(), x)
    return gradient


def saliency(model: nn.Module, inputs: Tensor, target: Target) -> Tensor:
    """|∂target/∂x| per input channel (the notes' map is its max over RGB)."""
    return input_gradient(model, inputs, target).abs()


def guided_backprop(model: nn.Module, inputs: Tensor, target: Target) -> Tensor:
    """Gradient with Springenberg's guided ReLU backward at every ReLU executed."""
    return input_gradient(model, inputs, target, _GuidedReLU)


def deconvnet(model: nn.Module, inputs: Tensor, target: Target) -> Tensor:
    """Backward signal with ReLU applied to it at every ReLU (Zeiler & Fergus)."""
    return input_gradient(model, inputs, target, _DeconvReLU)


def grad_cam(model: nn.Module, inputs: Tensor, target: Target, layer: LayerId, upsample: bool = True) -> Tensor:
    """ReLU(Σ_c mean(∂target/∂A_c) · A_c) at `layer`, upsampled to the input: (N, 1, H, W)."""
    captured: dict[str, Tensor] = {}

    def hook(_module, _inputs, output):
        captured["a"] = first_tensor(output)

    module = dict(model.named_modules())[layer]
    with _gradient_ready(model), module.register_forward_hook(hook):
        x = inputs.detach().clone().requires_grad_(True)
        score = _score(model, x, target)
        activation = captured["a"]
        (gradient,) = torch.autograd.grad(score.sum(), activation)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation.detach()).sum(dim=1, keepdim=True))
    if not upsample:
        return cam
    return F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)


def integrated_gradients(model: nn.Module, inputs: Tensor, target: Target, baseline: Tensor | None = None,
                         steps: int = 50, batch: int = 16, cancel: Event | None = None,
                         progress: Callable[[float], None] | None = None) -> Tensor:
    """(x − x') ∫ ∂target/∂x along the straight path, Gauss-Legendre nodes as Captum's default."""
    baseline = torch.zeros_like(inputs) if baseline is None else baseline
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = (nodes + 1) / 2
    weights = weights / 2
    total = torch.zeros_like(inputs)
    for start in range(0, steps, batch):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        chunk = torch.tensor(alphas[start:start + batch], dtype=inputs.dtype, device=inputs.device)
        path = baseline + chunk.view(-1, 1, 1, 1) * (inputs - baseline)
        gradient = input_gradient(model, path, target)
        scale = torch.tensor(weights[start:start + batch], dtype=inputs.dtype, device=inputs.device)
        total += (gradient * scale.view(-1, 1, 1, 1)).sum(dim=0, keepdim=True)
        if progress is not None:
            progress(min(1.0, (start + batch) / steps))
    return (inputs - baseline) * total


def occlusion(model: nn.Module, inputs: Tensor, target: Target, patch: int, stride: int,
              fill: Literal["gray", "zero", "blur"] = "gray", mean: tuple[float, ...] = (0.485, 0.456, 0.406),
              std: tuple[float, ...] = (0.229, 0.224, 0.225), batch: int = 32, cancel: Event | None = None,
              progress: Callable[[float], None] | None = None) -> Tensor:
    """Drop of the target when a `patch`×`patch` square is covered, averaged per pixel: (1, 1, H, W).

    Patches are evaluated `batch` at a time. `fill` is mid-gray (0.5 before
    normalisation), zero (black before normalisation) or a blurred copy.
    """
    _, channels, height, width = inputs.shape
    if fill == "blur":
        cover = torch.nn.functional.avg_pool2d(inputs, 15, stride=1, padding=7, count_include_pad=False)
    else:
        value = 0.5 if fill == "gray" else 0.0
        norm = torch.tensor([(value - m) / s for m, s in zip(mean, std)][:channels], dtype=inputs.dtype,
                            device=inputs.device).view(1, -1, 1, 1)
        cover = norm.expand_as(inputs)
    ys = list(range(0, max(height - patch, 0) + 1, stride))
    xs = list(range(0, max(width - patch, 0) + 1, stride))
    positions = [(y, x) for y in ys for x in xs]
    heat = torch.zeros(1, 1, height, width, dtype=torch.float32, device=inputs.device)
    counts = torch.zeros_like(heat)
    with torch.inference_mode(), eval_mode(model):
        base = _score(model, inputs, target).float()
        for start in range(0, len(positions), batch):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            chunk = positions[start:start + batch]
            covered = inputs.repeat(len(chunk), 1, 1, 1)
            for i, (y, x) in enumerate(chunk):
                covered[i, :, y:y + patch, x:x + patch] = cover[0, :, y:y + patch, x:x + patch]
            drops = (base - _score(model, covered, target).float()).tolist()
            for (y, x), drop in zip(chunk, drops):
                heat[0, 0, y:y + patch, x:x + patch] += drop
                counts[0, 0, y:y + patch, x:x + patch] += 1
            if progress is not None:
                progress((start + len(chunk)) / len(positions))
    return heat / counts.clamp(min=1)


def to_map(attribution: Tensor) -> np.ndarray:
    """(1, C, H, W) -> (H, W) float32: max of |a| over channels (the notes' saliency reduction)."""
    return attribution.detach()[0].abs().amax(dim=0).float().cpu().numpy()


def attribute(method: str, model: nn.Module, inputs: Tensor, target: Target, **options: Any) -> Tensor:
    """Dispatch by method name (see METHODS)."""
    if method == "saliency":
        return saliency(model, inputs, target)
    if method == "guided-backprop":
        return guided_backprop(model, inputs, target)
    if method == "deconvnet":
        return deconvnet(model, inputs, target)
    if method == "grad-cam":
        return grad_cam(model, inputs, target, options["layer"])
    if method == "integrated-gradients":
        return integrated_gradients(model, inputs, target, **options)
    if method == "occlusion":
        return occlusion(model, inputs, target, **options)
    raise ValueError(f"unknown method {method!r}; choose {', '.join(METHODS)}")


@dataclass(frozen=True, eq=False)
class GradientResult:
    """One gradient view: (C, H, W) float32 attribution aligned with `display`."""

    method: str
    target: Target
    attribution: np.ndarray
    display: np.ndarray
    options: dict
    milliseconds: float


def gradcam_layer(summary, layer: LayerId | None) -> LayerId:
    """Grad-CAM's layer: the target's layer when it has spatial maps, else the last such layer."""
    spatial = [row.name for row in summary.rows if len(row.output_shape) == 3 and not row.rf_whole]
    if layer is not None and layer in summary.fields and not summary.fields[layer].whole:
        rows = [name for name in spatial if name == layer or name.startswith(f"{layer}.")]
        if rows:
            return layer
    if not spatial:
        raise ValueError("Grad-CAM needs a layer with spatial maps; this model has none")
    return spatial[-1]


# --------------------------------------------------------------------------- pictures

DisplayMode = Literal["heat", "signed", "rgb", "overlay"]
DISPLAY_MODES: tuple[str, ...] = ("heat", "signed", "rgb", "overlay")


def render(attribution: np.ndarray, mode: str, display: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """Draw a (C, H, W) attribution as (H, W, 3) uint8.

    heat: max |a| over channels (the notes' saliency); signed: sum over channels,
    blue negative, red positive, zero white; rgb: the gradient itself as an image
    (centred, ±3 std); overlay: the heat map over the input picture.
    """
    from cnnviewer.engine.views.features import colormap_table

    values = np.asarray(attribution, dtype=np.float32)
    if mode == "rgb" and values.shape[0] == 3:
        centred = values - values.mean()
        scaled = centred / (3 * centred.std() + 1e-12) * 0.5 + 0.5
        return np.ascontiguousarray((np.clip(scaled, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0))
    if mode == "signed":
        signed = values.sum(axis=0)
        limit = float(np.percentile(np.abs(signed), 99.5)) or float(np.abs(signed).max()) or 1.0
        indices = np.clip((signed / limit * 0.5 + 0.5) * 255, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(colormap_table("coolwarm")[indices])
    heat = np.abs(values).max(axis=0)
    # Gradients are heavy-tailed: scale to the 99.5th percentile so more than a few pixels show.
    peak = float(np.percentile(heat, 99.5)) or float(heat.max()) or 1.0
    heat = np.clip(heat / peak, 0, 1)
    indices = (heat * 255).astype(np.uint8)
    coloured = colormap_table("inferno")[indices]
    if mode != "overlay":
        return np.ascontiguousarray(coloured)
    weight = np.sqrt(heat)[..., None] * opacity
    blended = display.astype(np.float32) * (1 - weight) + coloured.astype(np.float32) * weight
    return np.ascontiguousarray(np.clip(blended, 0, 255).astype(np.uint8))
