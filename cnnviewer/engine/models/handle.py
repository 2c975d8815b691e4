"""The loaded-model handle every panel shares, and how any module becomes one (eval, device, precision)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import nn

from cnnviewer.engine.errors import ModelError
from cnnviewer.engine.runtime.device import pick_device
from cnnviewer.engine.structure.layers import first_conv

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


_tokens = itertools.count(1)


class WeightsSource(str, Enum):
    """Where a model's pretrained weights were found."""

    HUB_CACHE = "torch hub cache"
    OFFLINE_PACK = "offline weights pack"
    DOWNLOAD = "downloaded"
    CUSTOM = "custom file"
    NONE = "untrained"


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input tensor (torchvision's ImageClassification)."""

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"   # torchvision InterpolationMode value, e.g. 'bicubic'


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready to run, with everything the UI needs to describe it.

    Attributes:
        name: architecture name ('mobilenet_v2', or 'file.py:Net' for user code).
        module: the network, in eval mode, on `device`; used by the job thread only.
        categories: class names; index i beyond its length is shown as 'class i'.
        preprocess: resize/crop/normalisation for inputs.
        weights_label: human description, e.g. 'IMAGENET1K_V1 (offline weights pack)'.
        trained: False when the weights are random; the UI labels it 'untrained'.
        device: where `module` lives.
        dtype: compute dtype (float32, or float16/bfloat16 on a GPU when asked).
        token: unique per load, so caches never mix two models.
        intact: for a model with knock-outs (experiments.knockout.intervene), the model without
            them; None for a model as loaded.
        interventions: the knock-outs (experiments.ablate_spec.Knockout) applied, in order.
    """

    name: str
    module: nn.Module
    categories: tuple[str, ...]
    preprocess: Preprocess
    weights_label: str
    trained: bool
    device: torch.device
    dtype: torch.dtype = torch.float32
    weights_path: str | None = None
    token: int = field(default_factory=lambda: next(_tokens))
    intact: LoadedModel | None = None
    interventions: tuple = ()
    # Filled in on construction (on the job thread), so the GUI thread reads
    # plain tuples and never walks the nn.Module itself.
    layer_names: tuple[str, ...] = field(init=False)
    layer_types: tuple[str, ...] = field(init=False)   # class names, parallel to layer_names
    input_channels: int = field(init=False)

    def __post_init__(self) -> None:
        named = list(self.module.named_modules())
        object.__setattr__(self, "layer_names", tuple(name for name, _ in named))
        object.__setattr__(self, "layer_types", tuple(type(module).__name__ for _, module in named))
        first = first_conv(self.module)
        channels = first[1].in_channels if first is not None else 3
        object.__setattr__(self, "input_channels", 1 if channels == 1 else 3)

    @property
    def original(self) -> LoadedModel:
        """The model without knock-outs: itself unless it is an intervened copy."""
        return self.intact if self.intact is not None else self

    @property
    def dtype_name(self) -> str:
        """'float32', 'float16' or 'bfloat16'."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def title(self) -> str:
        """'mobilenet_v2 (untrained)' style name for status bars."""
        suffix = "" if self.trained else " (untrained)"
        count = len(self.interventions)
        knocked = f" with {count} knock-out{'s' * (count != 1)}" if count else ""
        return f"{self.name}{suffix}{knocked}"

    def label(self, index: int) -> str:
        """Class name for an output index."""
        if 0 <= index < len(self.categories):
            return self.categories[index]
        return f"class {index}"


def finish_module(module: nn.Module, device: torch.device, precision: str) -> tuple[nn.Module, torch.dtype]:
    """Put a module in eval mode on `device` at the requested precision."""
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    if dtype is None:
        raise ModelError(f"unknown precision {precision!r}; choose fp32, fp16 or bf16")
    if dtype != torch.float32 and device.type == "cpu":
        raise ModelError(f"{precision} needs a GPU (this model would run on the CPU); use fp32")
    module = module.eval().to(device=device, dtype=dtype)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module, dtype


def wrap_module(module: nn.Module, name: str, *, base: LoadedModel | None = None,
                categories: tuple[str, ...] | None = None, weights_label: str = "untrained",
                trained: bool = False, weights_path: str | None = None,
                device: str | None = None, precision: str = "fp32",
                preprocess: Preprocess | None = None) -> LoadedModel:
    """Wrap any nn.Module (user architecture, TorchScript, export) as a LoadedModel."""
    torch_device = base.device if base is not None and device is None else pick_device(device)
    module, dtype = finish_module(module, torch_device, precision)
    return LoadedModel(
        name=name, module=module,
        categories=categories if categories is not None else (base.categories if base else ()),
        preprocess=preprocess or (base.preprocess if base is not None else Preprocess()),
        weights_label=weights_label, trained=trained, device=torch_device, dtype=dtype,
        weights_path=weights_path,
    )
