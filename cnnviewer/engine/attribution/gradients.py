"""Gradient views: saliency, guided backprop, DeconvNet, input × gradient, Grad-CAM, integrated gradients,
occlusion; `attribute` also dispatches to cams.py (Grad-CAM++, LayerCAM, Eigen-CAM, Score-CAM) and
smoothing.py (SmoothGrad).

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

from collections.abc import Callable
from threading import Event
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnviewer.engine.attribution.base import _score, gradient_ready
from cnnviewer.engine.attribution.cams import activation_and_gradient
from cnnviewer.engine.attribution.relu_rules import DeconvReLU, GuidedReLU, ReluRule
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.types import LayerId


def input_gradient(model: nn.Module, inputs: Tensor, target: Target, rule=None) -> Tensor:
    """∂target/∂input for a (N, C, H, W) batch, optionally with a ReLU backward rule."""
    with gradient_ready(model):
        x = inputs.detach().clone().requires_grad_(True)
        if rule is None:
            score = _score(model, x, target)
        else:
            with ReluRule(rule):
                score = _score(model, x, target)
        (gradient,) = torch.autograd.grad(score.sum(), x)
    return gradient


def saliency(model: nn.Module, inputs: Tensor, target: Target) -> Tensor:
    """|∂target/∂x| per input channel (the notes' map is its max over RGB)."""
    return input_gradient(model, inputs, target).abs()


def guided_backprop(model: nn.Module, inputs: Tensor, target: Target) -> Tensor:
    """Gradient with Springenberg's guided ReLU backward at every ReLU executed."""
    return input_gradient(model, inputs, target, GuidedReLU)


def deconvnet(model: nn.Module, inputs: Tensor, target: Target) -> Tensor:
    """Backward signal with ReLU applied to it at every ReLU (Zeiler & Fergus)."""
    return input_gradient(model, inputs, target, DeconvReLU)


def input_x_gradient(model: nn.Module, inputs: Tensor, target: Target) -> Tensor:
    """x ⊙ ∂target/∂x (Shrikumar et al.; Captum's InputXGradient): the gradient weighted by the
    input, a first-order estimate of each pixel's contribution to the score."""
    return inputs * input_gradient(model, inputs, target)


def grad_cam(model: nn.Module, inputs: Tensor, target: Target, layer: LayerId, upsample: bool = True,
             channels_last: bool = False) -> Tensor:
    """ReLU(Σ_c mean(∂target/∂A_c) · A_c) at `layer`, upsampled to the input: (N, 1, H, W).

    `channels_last`: the layer outputs (N, H, W, C) (ConvNeXt's pointwise Linear), so the
    channel weights average over axes 1, 2 rather than over W and C.
    """
    activation, gradient = activation_and_gradient(model, inputs, target, layer, channels_last)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
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


def gradcam_layer(summary, layer: LayerId | None) -> LayerId:
    """Grad-CAM's layer: the target's layer when it has spatial maps, else the last map before
    global pooling (`Summary.final_map`, from the graph; the last spatial row for hook summaries).

    Not merely the last row with maps: after a squeeze-and-excitation gate or in a ConvNeXt
    block that row can be a gate's input or a channel-last Linear inside the last block.
    """
    spatial = [row.name for row in summary.rows if len(row.output_shape) == 3 and not row.rf_whole]
    if layer is not None and layer in summary.fields and not summary.fields[layer].whole:
        rows = [name for name in spatial if name == layer or name.startswith(f"{layer}.")]
        if rows:
            return layer
    if summary.final_map:
        return summary.final_map
    if not spatial:
        raise ValueError("Grad-CAM needs a layer with spatial maps; this model has none")
    return spatial[-1]
