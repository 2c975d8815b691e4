"""torchvision's semantic segmentation networks (FCN, DeepLabV3, LR-ASPP) as ordinary models.

torchvision's segmentation models return a dict {'out': class map, 'aux': auxiliary map}. Every
tool here (torch.fx, the recorder, Captum, pytorch-grad-cam, `Target.region`) expects one tensor,
so each model's class is swapped for a same-named subclass whose forward returns only the (N, 21,
H, W) class map, and the auxiliary head (a training aid, unused at inference) is dropped. The
layer names stay torchvision's (backbone.*, classifier.*), so its checkpoints and a user's own
state dicts load unchanged. The final bilinear upsampling - torchvision calls F.interpolate in
forward - is the parameterless module `upsample`, so the recorder keeps its output (feature maps
of the full-size class map) and the summary lists it with its shape.

Input size. torchvision's metadata resizes the shorter side to 520 and keeps the whole image; our
pipeline always feeds a centre square (Preprocess.resize_size = crop_size). The recorded pass
keeps every module's output (the activation cache holds two such passes, and a gradient view keeps
a graph of the same size), and the dilated ResNets (output stride 8) keep 2048-channel maps at 1/8
of the input. Measured with benchmarks/bench_segmentation_models.py (random weights, one torch
thread, this 2-core machine, best of 2): at 520 px the recorded pass of fcn_resnet101 takes 7.1 s
(plain forward 6.7 s) and keeps 2.45 GiB, deeplabv3_resnet101's 7.7 s (6.6 s) and 2.50 GiB; at
384 px 2.9 s / 1.33 GiB and 3.4 s / 1.36 GiB. So the four ResNet models see a 384-px square (a
new image answers in about 3 s, two cached passes stay under 3 GiB), and the MobileNetV3 ones
torchvision's 520 px (LR-ASPP 0.13 s, DeepLabV3 0.32 s; 0.36-0.38 GiB). See `SQUARE_SIZES`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from threading import Event

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.segmentation import deeplabv3 as tv_deeplabv3
from torchvision.models.segmentation import fcn as tv_fcn
from torchvision.models.segmentation import lraspp as tv_lraspp

from cnnviewer.engine.errors import ModelError, WeightsError, describe
from cnnviewer.engine.models.handle import LoadedModel, Preprocess, WeightsSource, finish_module
from cnnviewer.engine.models.pretrained import (
    ProgressCallback,
    default_weights,
    locate_weights,
    seeded_init,
    verify_hash_prefix,
)
from cnnviewer.engine.models.weight_files import forced_weights_only
from cnnviewer.engine.runtime.device import pick_device
from cnnviewer.engine.segmentation.family import FAMILY, FAMILY_NOTE  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

# The centre square each model sees (resize_size = crop_size): see the module docstring.
SQUARE_SIZES = {
    "fcn_resnet50": 384, "fcn_resnet101": 384, "deeplabv3_resnet50": 384, "deeplabv3_resnet101": 384,
    "deeplabv3_mobilenet_v3_large": 520, "lraspp_mobilenet_v3_large": 520,
}


AUX_PREFIX = "aux_classifier."


class Upsample(nn.Module):
    """Bilinear resize of the class map to the input's size (torchvision's F.interpolate, as a
    module so that its output has a layer name)."""

    def forward(self, x: Tensor, size: torch.Size) -> Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FCN(tv_fcn.FCN):
    """torchvision's FCN returning only its class map (N, 21, H, W)."""

    def forward(self, x: Tensor) -> Tensor:   # type: ignore[override]
        return self.upsample(self.classifier(self.backbone(x)["out"]), x.shape[-2:])


class DeepLabV3(tv_deeplabv3.DeepLabV3):
    """torchvision's DeepLabV3 returning only its class map (N, 21, H, W)."""

    def forward(self, x: Tensor) -> Tensor:   # type: ignore[override]
        return self.upsample(self.classifier(self.backbone(x)["out"]), x.shape[-2:])


class LRASPP(tv_lraspp.LRASPP):
    """torchvision's LR-ASPP returning only its class map (N, 21, H, W)."""

    def forward(self, x: Tensor) -> Tensor:   # type: ignore[override]
        return self.upsample(self.classifier(self.backbone(x)), x.shape[-2:])


_OUT_ONLY = {tv_fcn.FCN: FCN, tv_deeplabv3.DeepLabV3: DeepLabV3, tv_lraspp.LRASPP: LRASPP}


def segmentation_models() -> list[str]:
    """Every torchvision semantic segmentation model name, sorted."""
    return sorted(torchvision.models.list_models(module=torchvision.models.segmentation))


def is_segmentation_name(name: str) -> bool:
    """Whether `name` is one of torchvision's segmentation models."""
    return name in segmentation_models()


def out_only(module: nn.Module) -> nn.Module:
    """The same module, answering with its class map only: the class swapped for the subclass
    above, `aux_classifier` dropped, the upsampling added as a module. Idempotent."""
    if type(module) in _OUT_ONLY.values():
        return module
    subclass = _OUT_ONLY.get(type(module))
    if subclass is None:
        raise ModelError(f"{type(module).__name__} is not one of torchvision's segmentation networks")
    module.__class__ = subclass
    if hasattr(module, "aux_classifier"):
        module.aux_classifier = None
    module.upsample = Upsample()
    return module


def build(name: str) -> nn.Module:
    """An untrained, class-map-only instance of `name`, without auxiliary head (CPU, fp32)."""
    return out_only(torchvision.models.get_model(name, weights=None, weights_backbone=None, aux_loss=False))


def preprocess_of(name: str) -> Preprocess:
    """torchvision's normalisation, on the model's centre square (see SQUARE_SIZES)."""
    side = SQUARE_SIZES.get(name, 520)
    weights = default_weights(name)
    transform = weights.transforms() if weights is not None else None
    mean = tuple(float(v) for v in getattr(transform, "mean", Preprocess().mean))
    std = tuple(float(v) for v in getattr(transform, "std", Preprocess().std))
    return Preprocess(resize_size=side, crop_size=side, mean=mean, std=std, interpolation="bilinear")


def without_aux(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A segmentation state dict without its auxiliary head's keys (the model here has none)."""
    return {key: value for key, value in state_dict.items() if not key.startswith(AUX_PREFIX)}


def architecture_of(state_dict: Mapping[str, Tensor]) -> str | None:
    """The segmentation network whose keys and shapes a state dict has (aux keys aside), or None.

    Each candidate is built on the meta device (no memory, no initialisation), so trying all six
    costs milliseconds; only the file's network is then built for real.
    """
    if not any(key.startswith("backbone.") for key in state_dict):
        return None
    wanted = {key: tuple(value.shape) for key, value in without_aux(state_dict).items()
              if not key.endswith("num_batches_tracked")}
    for name in segmentation_models():
        with torch.device("meta"):
            candidate = build(name)
        own = {key: tuple(value.shape) for key, value in candidate.state_dict().items()
               if not key.endswith("num_batches_tracked")}
        if own == wanted:
            return name
    return None


def load_segmentation_model(name: str, *, device: str | None = None, precision: str = "fp32",
                            allow_download: bool = False, progress: ProgressCallback | None = None,
                            cancel: Event | None = None) -> LoadedModel:
    """Build a segmentation network with the best weights available: the torch hub cache (hash
    checked, loaded by torchvision's own builder under weights-only unpickling), a download when
    the caller allows it, else untrained with random weights seeded by its name.

    Raises:
        ModelError: unknown name, device or precision.
        WeightsError: a cached file that is damaged or cannot be loaded safely.
    """
    if not is_segmentation_name(name):
        raise ModelError(f"unknown segmentation model {name!r}; choose one of {', '.join(segmentation_models())}")
    torch_device = pick_device(device)
    weights = default_weights(name)
    found, note = locate_weights(name, allow_download, progress, cancel)
    if found is None:
        with seeded_init(name):
            module = build(name)
        label, trained = f"untrained: no weights offline{note} (random, seeded by name)", False
    else:
        weights, path, source = found
        verify_hash_prefix(path)
        try:
            if source is WeightsSource.OFFLINE_PACK:
                module = build(name)
                module.load_state_dict(without_aux(torch.load(path, map_location="cpu", weights_only=True)))
            else:   # torchvision's own builder (it knows the checkpoint's layout), loading safely
                with forced_weights_only():
                    module = out_only(torchvision.models.get_model(name, weights=weights, weights_backbone=None))
        except Exception as error:  # noqa: BLE001 - a damaged or hostile file
            raise WeightsError(f"{path}: weights cannot be loaded safely ({describe(error)})") from None
        label, trained = f"{weights.name} ({source.value})", True
    module, dtype = finish_module(module, torch_device, precision)
    categories = tuple(weights.meta.get("categories", ())) if weights is not None else ()
    return LoadedModel(name=name, module=module, categories=categories, preprocess=preprocess_of(name),
                       weights_label=label, trained=trained, device=torch_device, dtype=dtype)
