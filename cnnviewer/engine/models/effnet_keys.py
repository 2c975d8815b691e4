"""`efficientnet_pytorch` state dicts (lukemelas' names: `_conv_stem`, `_blocks.N._depthwise_conv`,
`_fc`) mapped onto timm's EfficientNets by structure, and checked shape by shape.

The two libraries build the same network: efficientnet_pytorch numbers its blocks
0..N-1 in one list, timm nests them per stage (`blocks.S.I`). Walking timm's
blocks in order gives the flat index; inside a block the layer names map by
role (a block without an expansion conv is timm's DepthwiseSeparableConv).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from cnnviewer.engine.errors import WeightsError

# efficientnet_pytorch name -> timm name, inside one block.
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
             "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
              "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.(.+)$")


def looks_like_efficientnet_pytorch(state_dict: dict[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state_dict and any(key.startswith("_blocks.0.") for key in state_dict)


def _flat_blocks(model: nn.Module) -> list[str]:
    """timm's block prefixes in execution order: ['blocks.0.0', 'blocks.1.0', 'blocks.1.1', ...]."""
    return [f"blocks.{stage}.{index}" for stage, blocks in enumerate(model.blocks) for index in range(len(blocks))]


def timm_keys(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict renamed for `model` (a timm EfficientNet).

    Raises:
        WeightsError: a tensor has no place in `model`, a shape differs, or a tensor is missing.
    """
    blocks = _flat_blocks(model)
    expanded = {prefix: hasattr(model.get_submodule(prefix), "conv_pwl") for prefix in blocks}
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, layer, rest = int(match[1]), match[2], match[3]
            if index >= len(blocks):
                raise WeightsError(f"{key}: the file has more blocks than the model ({len(blocks)})")
            table = _EXPANDED if expanded[blocks[index]] else _SEPARABLE
            if layer not in table:
                raise WeightsError(f"{key}: no {layer} in the model's block {blocks[index]}")
            renamed[f"{blocks[index]}.{table[layer]}.{rest}"] = tensor
        else:
            layer, _, rest = key.partition(".")
            if layer not in _TOP:
                raise WeightsError(f"{key}: not a layer of an EfficientNet")
            renamed[f"{_TOP[layer]}.{rest}"] = tensor
    expected = model.state_dict()
    for key, tensor in renamed.items():
        if key not in expected:
            raise WeightsError(f"{key}: not in the model (a different EfficientNet?)")
        if tuple(expected[key].shape) != tuple(tensor.shape):
            raise WeightsError(f"{key}: shape {tuple(tensor.shape)} in the file, {tuple(expected[key].shape)} "
                               "in the model")
    missing = sorted(set(expected) - set(renamed))
    if missing:
        raise WeightsError(f"the file lacks {len(missing)} of the model's tensors (e.g. {missing[0]})")
    return renamed


def load_efficientnet_pytorch(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load an efficientnet_pytorch state dict into a timm EfficientNet, or raise with the reason."""
    try:
        renamed = timm_keys(state_dict, model)
    except WeightsError as error:
        raise WeightsError(f"{source}: {error}") from None
    model.load_state_dict(renamed, strict=True)


# timm architectures an efficientnet_pytorch file can be (TF 'same' padding, as that library's).
CANDIDATES = tuple(f"tf_efficientnet_lite{i}" for i in range(5)) + tuple(f"tf_efficientnet_b{i}" for i in range(8))


def find_architecture(state_dict: dict[str, torch.Tensor], source: str) -> tuple[nn.Module, str]:
    """The timm EfficientNet whose every tensor shape matches the file, built and loaded, with its
    `timm:NAME`.

    Candidates are checked on the meta device first (no memory, no initialisation time).
    """
    import timm

    classes = state_dict["_fc.weight"].shape[0] if "_fc.weight" in state_dict else 1000
    for name in CANDIDATES:
        with torch.device("meta"):
            skeleton = timm.create_model(name, pretrained=False, num_classes=classes)
        try:
            timm_keys(state_dict, skeleton)
        except WeightsError:
            continue
        model = timm.create_model(name, pretrained=False, num_classes=classes)
        load_efficientnet_pytorch(model, state_dict, source)
        return model, f"timm:{name}"
    raise WeightsError(f"{source}: an efficientnet_pytorch state dict, but no EfficientNet "
                       f"({', '.join(CANDIDATES[:2])} ... {CANDIDATES[-1]}) has all its shapes")
