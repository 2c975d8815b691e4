"""Which eval-mode Conv2d + BatchNorm2d pairs can be folded into one convolution, and folding them
in a shallow copy of a model (shared by synthesis' fast view and the dataset index's forward).

BatchNorm in eval mode is a per-channel affine map: folded into the convolution before it, the
output is the same up to float rounding, and the forward skips one pass over every activation.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Collection
from itertools import pairwise

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def norm_pairs(container: nn.Module) -> list[tuple[str, str]]:
    """Names (conv, batch norm) of the pairs whose norm reads the conv's output and nothing else does."""
    names = [name for name, child in container._modules.items() if child is not None]
    if isinstance(container, nn.Sequential) and type(container).forward is nn.Sequential.forward:
        return list(pairwise(names))
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
    if type(container) is ResNet:
        return [("conv1", "bn1")]
    if type(container) is BasicBlock:
        return [("conv1", "bn1"), ("conv2", "bn2")]
    if type(container) is Bottleneck:
        return [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")]
    return []


def foldable(conv: nn.Module | None, norm: nn.Module | None) -> bool:
    return (type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d and norm.running_mean is not None
            and conv.weight.dtype in (torch.float32, torch.float64) and not conv.training and not norm.training
            and not has_hooks(conv) and not has_hooks(norm) and norm.num_features == conv.out_channels)


def fold_norms(module: nn.Module, name: str, changed: dict[str, nn.Module], keep: Collection[str]) -> None:
    """Fold `module`'s own foldable pairs into `changed` (child name -> replacement; children already
    replaced are folded as replaced), except pairs with a member named in `keep`."""
    children = module._modules
    for conv_name, norm_name in norm_pairs(module):
        conv, norm = changed.get(conv_name, children.get(conv_name)), children.get(norm_name)
        named = {f"{name}.{part}" if name else part for part in (conv_name, norm_name)}
        if foldable(conv, norm) and not named & set(keep):
            changed[conv_name], changed[norm_name] = fuse_conv_bn_eval(conv, norm), nn.Identity()


def with_children(module: nn.Module, changed: dict[str, nn.Module]) -> nn.Module:
    """A shallow copy of `module` with the children in `changed` replaced (`module` when none is)."""
    if not changed:
        return module
    clone = copy.copy(module)
    clone._modules = OrderedDict(module._modules)
    clone._modules.update(changed)
    return clone


def folded_copy(module: nn.Module, keep: Collection[str], name: str = "") -> nn.Module:
    """`module` with its foldable pairs folded, except pairs with a member named in `keep`; the
    modules keep their names (a folded norm becomes an Identity). Unchanged modules are shared, not
    copied: `module` itself is never modified. Call with the model in eval mode, without gradients."""
    changed: dict[str, nn.Module] = {}
    for child_name, child in module._modules.items():
        if child is not None:
            new = folded_copy(child, keep, f"{name}.{child_name}" if name else child_name)
            if new is not child:
                changed[child_name] = new
    fold_norms(module, name, changed, keep)
    return with_children(module, changed)
