"""Class activation maps beyond Grad-CAM: Grad-CAM++, LayerCAM, Eigen-CAM and Score-CAM.

Formulas follow pytorch-grad-cam 1.5.7 (grad_cam_plusplus.py, layer_cam.py, eigen_cam.py,
score_cam.py, utils/svd_on_activations.py), so the test compares the layer-resolution maps with
it to 1e-4; papers: Chattopadhay et al. 2018, Jiang et al. 2021, Muhammad & Yeasin 2020,
Wang et al. 2020. Every function returns a ReLU'd (N, 1, H, W) map upsampled bilinearly to the
input as `gradients.grad_cam` does (`upsample=False`: the layer's (N, 1, h, w)), and takes
`channels_last` for layers that output (N, h, w, C) (ConvNeXt's pointwise Linear).

The layer's output is kept through a forward hook that hands the rest of the network a copy,
so an in-place operation after the layer (ResNet's `out += identity`, an in-place ReLU) cannot
overwrite what is weighed; the hook lives only inside a `with` and the model's modes and
`requires_grad` flags are restored (see `base.gradient_ready`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from threading import Event
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnviewer.engine.attribution.base import _score, gradient_ready
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.types import LayerId

_EPS_PLUS_PLUS = 1e-6   # pytorch-grad-cam's eps in Grad-CAM++'s alpha denominator
_EPS_SCORE = 1e-8       # and in Score-CAM's mask min-max normalisation
_T = TypeVar("_T")


@contextmanager
def _keep_output(model: nn.Module, layer: LayerId, leaf: bool = False) -> Iterator[dict[str, Tensor]]:
    """Record `layer`'s output (its last call) while the rest of the network runs on a copy.

    `leaf`: record it as a leaf that requires grad, so the backward pass stops at the layer.
    """
    captured: dict[str, Tensor] = {}

    def hook(_module, _inputs, output):
        if isinstance(output, Tensor):
            captured["a"] = output.detach().requires_grad_(True) if leaf else output
            return captured["a"].clone()     # later in-place ops modify the copy, not the recorded map
        captured["a"] = first_tensor(output)
        return None

    module = dict(model.named_modules())[layer]
    with module.register_forward_hook(hook):
        yield captured


_NEEDS_CONTIGUOUS: weakref.WeakSet[nn.Module] = weakref.WeakSet()   # models that failed on channels-last


def _fast(model: nn.Module, call: Callable[[Tensor], _T], inputs: Tensor) -> _T:
    """`call(inputs)` with a CPU batch channels-last: oneDNN's convolutions ran ~1.1-2x faster on batches
    of 8-32 (resnet18, mobilenet_v3_large, one thread), but a single image 1.14x slower on resnet18,
    so one image stays as it is. A model that needs a contiguous input (`x.view(n, -1)` after a
    convolution) fails with a RuntimeError: it is rerun contiguous, and remembered."""
    if model in _NEEDS_CONTIGUOUS or inputs.dim() != 4 or inputs.shape[0] < 2 or inputs.device.type != "cpu":
        return call(inputs)
    try:
        return call(inputs.contiguous(memory_format=torch.channels_last))
    except RuntimeError:
        _NEEDS_CONTIGUOUS.add(model)
        return call(inputs.contiguous())


def _channels_first(tensor: Tensor, channels_last: bool) -> Tensor:
    return tensor.permute(0, 3, 1, 2) if channels_last else tensor


def activation_and_gradient(model: nn.Module, inputs: Tensor, target: Target, layer: LayerId,
                             channels_last: bool) -> tuple[Tensor, Tensor]:
    """The layer's (N, C, h, w) activation and ∂target/∂activation, both detached.

    The layer's output becomes a leaf: autograd records only what follows the layer (the weights
    are frozen and the input needs no gradient), so the forward up to it costs what inference
    does. A layer that returns a tuple cannot be made a leaf: then the input carries the graph.
    A batch runs channels-last on the CPU (see `_fast`).
    """
    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        with gradient_ready(model), _keep_output(model, layer, leaf=True) as captured:
            score = _score(model, x, target)
            if not captured["a"].requires_grad:
                score = _score(model, x.clone().requires_grad_(True), target)
            (gradient,) = torch.autograd.grad(score.sum(), captured["a"])
        return captured["a"].detach(), gradient

    activation, gradient = _fast(model, run, inputs.detach())
    return _channels_first(activation, channels_last), _channels_first(gradient, channels_last)


def _activation(model: nn.Module, inputs: Tensor, layer: LayerId, channels_last: bool) -> Tensor:
    """The layer's (N, C, h, w) activation from one forward pass without autograd."""
    def run(x: Tensor) -> Tensor:
        with torch.inference_mode(), eval_mode(model), _keep_output(model, layer) as captured:
            model(x)
        return captured["a"]

    return _channels_first(_fast(model, run, inputs), channels_last)


def _finish(cam: Tensor, inputs: Tensor, upsample: bool) -> Tensor:
    """ReLU, keep a channel axis, and (optionally) resize to the input as Grad-CAM does."""
    cam = F.relu(cam).unsqueeze(1)
    if not upsample:
        return cam
    return F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)


def grad_cam_plus_plus(model: nn.Module, inputs: Tensor, target: Target, layer: LayerId, upsample: bool = True,
                       channels_last: bool = False) -> Tensor:
    """Grad-CAM++: channel weights Σ_ij α_ij ReLU(g_ij) with the closed-form α of the paper's eq. 19.

    α = g² / (2g² + Σ_ij A · g³), zero where the gradient is zero; weighs every positive gradient
    location instead of the plain mean, so several instances of a class all show.
    """
    activation, gradient = activation_and_gradient(model, inputs, target, layer, channels_last)
    squared = gradient.pow(2)
    total = activation.sum(dim=(2, 3), keepdim=True)
    alpha = squared / (2 * squared + total * squared * gradient + _EPS_PLUS_PLUS)
    alpha = torch.where(gradient != 0, alpha, torch.zeros_like(alpha))
    weights = (F.relu(gradient) * alpha).sum(dim=(2, 3), keepdim=True)
    return _finish((weights * activation).sum(dim=1), inputs, upsample)


def layer_cam(model: nn.Module, inputs: Tensor, target: Target, layer: LayerId, upsample: bool = True,
              channels_last: bool = False) -> Tensor:
    """LayerCAM: Σ_c ReLU(∂target/∂A_c) ⊙ A_c, a weight per location, so shallow layers give detail."""
    activation, gradient = activation_and_gradient(model, inputs, target, layer, channels_last)
    return _finish((F.relu(gradient) * activation).sum(dim=1), inputs, upsample)


def eigen_cam(model: nn.Module, inputs: Tensor, target: Target | None, layer: LayerId, upsample: bool = True,
              channels_last: bool = False) -> Tensor:
    """Eigen-CAM: the layer's maps projected on their first principal component.

    Gradient-free and class-agnostic: `target` is ignored (every target gives the same map),
    taken only so all methods share one signature. Each position is a sample of C features;
    the features are centred over positions and projected on the first right singular vector.
    An SVD's sign is arbitrary, so ours is fixed by a rule: the projection correlates positively
    with the channel-summed activation (the map is the part of the image the layer responds to);
    a tie (zero correlation) keeps the sign whose largest |value| is positive.
    """
    activation = _activation(model, inputs, layer, channels_last).float()
    activation = torch.nan_to_num(activation, nan=0.0)
    count, channels, height, width = activation.shape
    features = activation.reshape(count, channels, height * width).transpose(1, 2)   # (N, hw, C)
    centred = features - features.mean(dim=1, keepdim=True)
    _, _, right = torch.linalg.svd(centred.double(), full_matrices=False)
    projection = (centred.double() @ right[:, 0, :].unsqueeze(-1)).squeeze(-1)       # (N, hw)
    summed = features.double().sum(dim=2)
    correlation = ((summed - summed.mean(dim=1, keepdim=True)) * projection).sum(dim=1)
    extreme = projection.gather(1, projection.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    sign = torch.where(correlation != 0, correlation.sign(), extreme.sign())
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    cam = (projection * sign.unsqueeze(1)).reshape(count, height, width).to(inputs.dtype)
    return _finish(cam, inputs, upsample)


def score_cam(model: nn.Module, inputs: Tensor, target: Target, layer: LayerId, upsample: bool = True,
              channels_last: bool = False, batch: int = 32, cancel: Event | None = None,
              progress: Callable[[float], None] | None = None) -> Tensor:
    """Score-CAM: each channel weighted by the target's score on the input masked by that channel.

    As pytorch-grad-cam: each channel upsampled to the input (bilinear, corners aligned), scaled
    to [0, 1], multiplied into the input; the weights are the softmax over channels of the raw
    target scores. Masked inputs run `batch` at a time in inference mode, built per batch (never
    all C copies at once). A constant channel's mask is all zeros, so every such channel shares
    one forward of the zero image instead of one each (a ReLU layer can have dead channels).
    """
    activation = _activation(model, inputs, layer, channels_last)
    count, channels = activation.shape[:2]
    weights = torch.empty(count, channels, dtype=torch.float32, device=inputs.device)
    work = count * channels
    done = 0
    with torch.inference_mode(), eval_mode(model):
        for item in range(count):
            maps = activation[item:item + 1]
            flat = maps.flatten(2)
            low, high = flat.amin(dim=2)[0], flat.amax(dim=2)[0]
            live = (high > low).nonzero().flatten()
            scores = torch.empty(channels, dtype=torch.float32, device=inputs.device)
            if len(live) < channels:   # dead channels: mask (a - min) / (0 + eps) = 0 exactly
                zero = torch.zeros_like(inputs[item:item + 1])
                scores[:] = _score(model, zero, target).float()[0]
                done += channels - len(live)
            image = inputs[item:item + 1]
            for start in range(0, len(live), batch):
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                chosen = live[start:start + batch]
                masks = F.interpolate(maps[:, chosen], size=inputs.shape[-2:], mode="bilinear",
                                      align_corners=True)[0]
                lo = masks.flatten(1).amin(dim=1).view(-1, 1, 1)
                hi = masks.flatten(1).amax(dim=1).view(-1, 1, 1)
                masks = (masks - lo) / (hi - lo + _EPS_SCORE)
                scores[chosen] = _fast(model, lambda x: _score(model, x, target), image * masks.unsqueeze(1)).float()
                done += len(chosen)
                if progress is not None:
                    progress(done / work)
            weights[item] = torch.softmax(scores, dim=0)
    cam = (weights.to(activation.dtype).view(count, channels, 1, 1) * activation).sum(dim=1)
    return _finish(cam, inputs, upsample)
