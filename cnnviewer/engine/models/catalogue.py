"""The model catalogue (torchvision's own registry, grouped by family) and building a model from it.

Every classification model torchvision ships is offered, and its semantic segmentation networks
(built by engine.segmentation.models). A model whose pretrained weights cannot be found or
downloaded is built untrained and says so.
"""

from __future__ import annotations

import logging
from threading import Event

import torch
import torchvision

from cnnviewer.engine.errors import ModelError, WeightsError, describe
from cnnviewer.engine.models.handle import LoadedModel, WeightsSource, finish_module
from cnnviewer.engine.models.pretrained import (
    ProgressCallback,
    default_weights,
    downloads_allowed,
    find_pretrained,
    locate_weights,
    seeded_init,
    preprocess_for,
    verify_hash_prefix,
)
from cnnviewer.engine.models.weight_files import forced_weights_only
from cnnviewer.engine.runtime.device import pick_device

log = logging.getLogger(__name__)

_FAMILY_PATTERNS = (
    ("resnext", "ResNeXt"), ("wide_resnet", "Wide ResNet"), ("resnet", "ResNet"),
    ("densenet", "DenseNet"), ("efficientnet_v2", "EfficientNet V2"),
    ("efficientnet", "EfficientNet"), ("mobilenet", "MobileNet"), ("mnasnet", "MNASNet"),
    ("shufflenet", "ShuffleNet"), ("squeezenet", "SqueezeNet"), ("regnet", "RegNet"),
    ("convnext", "ConvNeXt"), ("vgg", "VGG"), ("alexnet", "AlexNet"),
    ("googlenet", "GoogLeNet"), ("inception", "Inception"), ("vit", "Vision Transformer"),
    ("swin", "Swin Transformer"), ("maxvit", "MaxViT"),
)


def classification_models() -> list[str]:
    """Every torchvision image-classification model name, sorted."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def model_family(name: str) -> str:
    """Human family name used to group the catalogue ('resnet50' -> 'ResNet')."""
    for prefix, family in _FAMILY_PATTERNS:
        if name.startswith(prefix):
            return family
    return name


def catalogue(include_timm: bool = True) -> dict[str, list[str]]:
    """Models grouped by family: torchvision's classifiers (families in alphabetical order), its
    segmentation networks (one family, plain torchvision names), then timm's CNNs (as `timm:NAME`,
    under 'timm · Family')."""
    from cnnviewer.engine.segmentation import models as segmentation
    groups: dict[str, list[str]] = {}
    for name in classification_models():
        groups.setdefault(model_family(name), []).append(name)
    groups = dict(sorted(groups.items()))
    groups[segmentation.FAMILY] = segmentation.segmentation_models()
    if include_timm:
        from cnnviewer.engine.models import timm_models
        for family, names in timm_models.cnn_models().items():
            groups[f"timm · {family}"] = [f"{timm_models.PREFIX}{name}" for name in names]
    return groups


def catalogue_status(name: str) -> str:
    """Where pretrained weights for `name` would come from, for the model chooser."""
    from cnnviewer.engine.models import timm_models
    if timm_models.is_timm(name):
        return timm_models.status(name.removeprefix(timm_models.PREFIX))
    found = find_pretrained(name)
    if found is not None:
        return found[2].value
    if default_weights(name) is None:
        return "no pretrained weights"
    return "download" if downloads_allowed() else "untrained (offline)"


def load_torchvision_model(name: str, *, device: str | None = None, precision: str = "fp32",
                           allow_download: bool = False, progress: ProgressCallback | None = None,
                           cancel: Event | None = None) -> LoadedModel:
    """Build a torchvision classification model with the best weights available.

    Args:
        name: a name from `classification_models()`.
        device: 'cpu', 'cuda', 'mps' or None for the fastest present.
        precision: 'fp32', or 'fp16'/'bf16' on a GPU.
        allow_download: try to download missing pretrained weights (with progress).

    Raises:
        ModelError: unknown architecture or device.
    """
    if name not in classification_models():
        raise ModelError(f"unknown model {name!r}; see File > Choose model for the list")
    torch_device = pick_device(device)
    weights = default_weights(name)
    found, note = locate_weights(name, allow_download, progress, cancel)
    if found is None:
        with seeded_init(name):
            module = torchvision.models.get_model(name, weights=None)
        label, trained = f"untrained: no weights offline{note} (random, seeded by name)", False
    else:
        weights, path, source = found
        if source is WeightsSource.OFFLINE_PACK:
            verify_hash_prefix(path)
            module = torchvision.models.get_model(name, weights=None)
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        else:  # in the hub cache: torchvision's own builder (it remaps old key names), loading safely
            verify_hash_prefix(path)
            try:
                with forced_weights_only():
                    module = torchvision.models.get_model(name, weights=weights)
            except Exception as error:  # noqa: BLE001 - a damaged or hostile cache file
                raise WeightsError(f"{path}: cached weights cannot be loaded safely ({describe(error)})") from None
        label, trained = f"{weights.name} ({source.value})", True
    module, dtype = finish_module(module, torch_device, precision)
    categories = tuple(weights.meta.get("categories", ())) if weights is not None else ()
    return LoadedModel(name=name, module=module, categories=categories,
                       preprocess=preprocess_for(weights), weights_label=label, trained=trained,
                       device=torch_device, dtype=dtype)
