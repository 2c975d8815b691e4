"""Finding layers in a model: the convolution behind a layer, the first convolution, its weights."""

from __future__ import annotations

import numpy as np
from torch import nn

from cnnviewer.engine.types import LayerId


def is_conv2d(module: nn.Module) -> bool:
    """A 2-D convolution of any kind (Conv2d, ConvTranspose2d, LazyConv2d, ...)."""
    return isinstance(module, nn.modules.conv._ConvNd) and module.weight.dim() == 4


def first_conv(model: nn.Module) -> tuple[LayerId, nn.Module] | None:
    """The model's first 2-D convolution in module order, or None."""
    return next(((name, m) for name, m in model.named_modules() if is_conv2d(m)), None)


def conv_weights(conv: nn.Module) -> np.ndarray:
    """A convolution's kernels as (out, in/groups, kh, kw) float32 on the CPU."""
    return np.ascontiguousarray(conv.weight.detach().float().cpu().numpy())


def find_conv(model: nn.Module, layer: LayerId | None) -> tuple[LayerId, nn.Module] | None:
    """The convolution for `layer`: itself, its first conv inside, else the model's first."""
    modules = dict(model.named_modules())
    candidates = []
    if layer is not None and layer in modules:
        candidates = [(f"{layer}.{n}" if n else layer, m) for n, m in modules[layer].named_modules()]
    candidates += list(modules.items())
    return next(((name, module) for name, module in candidates if is_conv2d(module)), None)


_SHORTCUT_WORDS = ("downsample", "shortcut", "skip", "identity")


def layer_conv(model: nn.Module, layer: LayerId, channels: int | None) -> tuple[LayerId, nn.Module] | None:
    """The convolution that explains `layer`'s channels: itself, or inside a block
    the last main-path conv whose output channels equal the block's (a ResNet
    bottleneck's conv3, not its downsample; an inverted residual's projection).
    None when the layer holds no convolution.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        return None
    convs = [(f"{layer}.{n}" if n else layer, m) for n, m in modules[layer].named_modules()
             if is_conv2d(m)]
    if not convs:
        return None
    main_path = [(n, m) for n, m in convs if not any(w in n[len(layer):] for w in _SHORTCUT_WORDS)] or convs
    matching = [(n, m) for n, m in main_path if channels is not None and m.out_channels == channels]
    return (matching or main_path)[-1]
