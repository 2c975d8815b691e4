"""Turn what the user names (a model, a weights file, an architecture file) into a LoadedModel.

This is the one place that decides how a weights file meets an architecture:
the current model's architecture first, then the architecture inferred from the
file's keys and shapes, with the classifier adapted to the file's classes.
Every failure is a one-line error and leaves the caller's current model alone
(a new module is always built; the old one is never modified).
"""

from __future__ import annotations

import copy
from pathlib import Path
from threading import Event

import torch
import torchvision

from cnnviewer.engine.errors import WeightsError
from cnnviewer.engine.media.files import regular_file
from cnnviewer.engine.models.catalogue import (
    classification_models,
    load_torchvision_model,
)
from cnnviewer.engine.models.fitting import fit_state_dict, infer_architecture
from cnnviewer.engine.models.handle import LoadedModel, Preprocess, wrap_module
from cnnviewer.engine.models.pretrained import (
    ProgressCallback,
    default_weights,
    preprocess_for,
)
from cnnviewer.engine.models.user_arch import build_user_model
from cnnviewer.engine.models.weight_files import read_weights
from cnnviewer.engine.types import DEFAULT_MODEL, ONNX_SUFFIX

LABEL_FILE_NAMES = ("labels.txt", "classes.txt", "synset_words.txt")


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Class names, one per line (blank lines ignored).

    Raises:
        WeightsError: the file cannot be read as text.
    """
    path = regular_file(path, WeightsError)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path.name}: cannot read labels ({error.__class__.__name__})") from None
    labels = tuple(line.strip() for line in lines if line.strip())
    if not labels:
        raise WeightsError(f"{path.name}: labels file is empty")
    return labels


def labels_beside(weights_path: Path) -> tuple[str, ...] | None:
    """Labels from a labels.txt/classes.txt next to a weights file, if one is there."""
    for name in LABEL_FILE_NAMES:
        candidate = weights_path.with_name(name)
        if candidate.is_file():
            return read_labels(candidate)
    return None


def names_code(spec: str) -> bool:
    """Whether building `spec` runs code from a file (`FILE.py:NAME`): only ever for a file the user
    named or confirmed in this very action, never because a saved file (recipe, settings) names it."""
    return ".py:" in spec or spec.strip().endswith(".py")


def load_model(spec: str, *, device: str | None = None, precision: str = "fp32",
               allow_download: bool = False, progress: ProgressCallback | None = None,
               cancel: Event | None = None) -> LoadedModel:
    """Build a model from a torchvision name (classifier or segmentation network), `timm:NAME`, a
    user's `FILE.py:NAME`, or an ONNX file (data, not code: converted, never run as Python)."""
    from cnnviewer.engine.models import timm_models
    from cnnviewer.engine.segmentation import models as segmentation
    if spec.lower().endswith(ONNX_SUFFIX):
        return load_onnx_model(spec, device=device, precision=precision)
    if segmentation.is_segmentation_name(spec):
        return segmentation.load_segmentation_model(spec, device=device, precision=precision,
                                                    allow_download=allow_download, progress=progress,
                                                    cancel=cancel)
    if timm_models.is_timm(spec):
        return timm_models.load_timm_model(spec, device=device, precision=precision, allow_download=allow_download)
    if names_code(spec):
        module = build_user_model(spec)
        name = f"{Path(spec.rsplit(':', 1)[0]).name}:{spec.rsplit(':', 1)[-1]}"
        return wrap_module(module, name, device=device, precision=precision)
    return load_torchvision_model(spec, device=device, precision=precision,
                                  allow_download=allow_download, progress=progress, cancel=cancel)


def _categories(num_classes: int, architecture: str | None, explicit: tuple[str, ...] | None,
                beside: tuple[str, ...] | None) -> tuple[str, ...]:
    """Explicit labels, then a labels file beside the weights, then ImageNet for 1000, else 'class i'."""
    for labels in (explicit, beside):
        if labels is not None:
            return labels
    if num_classes == 1000 and architecture is not None:
        weights = default_weights(architecture)
        if weights is not None:
            return tuple(weights.meta["categories"])
    return tuple(f"class {i}" for i in range(num_classes))


def _num_outputs(module: torch.nn.Module) -> int:
    """Output classes of a model: the size of its last parameterised layer's output."""
    last = None
    for submodule in module.modules():
        if isinstance(submodule, (torch.nn.Linear, torch.nn.Conv2d)):
            last = submodule
    if last is None:
        return 0
    return last.out_features if isinstance(last, torch.nn.Linear) else last.out_channels


def load_weights(path: str | Path, current: LoadedModel | None, *, trust: bool = False,
                 labels: tuple[str, ...] | None = None, device: str | None = None,
                 precision: str = "fp32") -> LoadedModel:
    """Load a weights file into a new model that fits it.

    Args:
        path: state dict / checkpoint / safetensors / TorchScript / .pt2 / pickled model.
        current: the model now shown; its architecture is tried first.
        trust: allow a full pickled model (runs code from the file).
        labels: class names overriding any found beside the file.

    Raises:
        WeightsError: unreadable, untrusted pickle, or no architecture fits.
    """
    path = Path(path)
    if path.suffix.lower() == ONNX_SUFFIX:   # a whole model: it replaces the current one
        return load_onnx_model(path, labels=labels, precision=precision,
                               device=device or (str(current.device) if current else None))
    loaded = read_weights(path, trust=trust)
    beside = labels_beside(path)
    label = f"custom: {path.name}"
    if loaded.kind != "state_dict":
        module = loaded.module
        assert module is not None
        return wrap_module(module, f"{path.name} ({loaded.kind})", base=current,
                           categories=labels or beside or (current.categories if current else None),
                           weights_label=label, trained=True, weights_path=str(path),
                           device=device, precision=precision)
    if loaded.ignored_keys:
        label += f" (ignored: {', '.join(loaded.ignored_keys[:4])})"
    broken = non_finite(loaded.state_dict or {})
    if broken:   # a diverged run: everything downstream would be NaN, say so where the weights are named
        label += (f" — warning: {len(broken)} {'tensors hold' if len(broken) != 1 else 'tensor holds'} NaN or inf "
                  f"({', '.join(broken[:2])}); outputs will be meaningless")
    from cnnviewer.engine.models import effnet_keys
    if effnet_keys.looks_like_efficientnet_pytorch(loaded.state_dict or {}):
        return _efficientnet_pytorch(loaded.state_dict, path, current, label, labels, beside, device, precision)
    attempts: list[str] = []
    from cnnviewer.engine.models import timm_models
    from cnnviewer.engine.segmentation import models as segmentation
    for variant, state_dict in enumerate(prefix_variants(loaded.state_dict or {})):
        if current is not None and segmentation.is_segmentation_name(current.name):
            state_dict = segmentation.without_aux(state_dict)   # the auxiliary head is not kept here
        if current is not None and timm_models.is_timm(current.name):   # same timm net, maybe a new head
            module = timm_models.fit_to(current.name.removeprefix(timm_models.PREFIX), state_dict)
            if module is not None:
                return _wrap_timm(module, current.name, path, current, label, labels, beside, device, precision)
        if current is not None:
            try:
                module = _fresh_copy(current)
                fit_state_dict(module, state_dict, source=path.name, model_name=current.name)
                return wrap_module(module, current.name, base=current,
                                   categories=labels or beside or current.categories,
                                   weights_label=label, trained=True, weights_path=str(path),
                                   device=device, precision=precision)
            except WeightsError as error:
                attempts.append(str(error))
        found_segmentation = segmentation.architecture_of(state_dict)
        if found_segmentation is not None:   # a torchvision FCN / DeepLabV3 / LR-ASPP state dict
            return _wrap_segmentation(found_segmentation, state_dict, path, current, label, labels, beside,
                                      device, precision)
        try:
            match = infer_architecture(state_dict, source=path.name)
        except WeightsError as error:
            attempts.append(str(error))
            if variant:   # timm's names are searched once, on the file's own keys
                continue
            try:
                found = timm_models.infer_architecture(state_dict)
            except WeightsError as timm_error:   # named like timm's, fits none tried: say how to load it
                attempts.insert(0, f"{path.name}: {timm_error}")
                continue
            if found is not None:   # a bare timm state dict
                return _wrap_timm(*found, path, current, label, labels, beside, device, precision)
            continue
        module = torchvision.models.get_model(match.name, weights=None, **match.kwargs)
        fit_state_dict(module, state_dict, source=path.name, model_name=match.name)
        return wrap_module(module, match.name, base=None,
                           categories=_categories(match.num_classes, match.name, labels, beside),
                           weights_label=label, trained=True, weights_path=str(path),
                           device=device or (str(current.device) if current else None),
                           precision=precision, preprocess=preprocess_for(default_weights(match.name)))
    raise WeightsError(attempts[0])


def load_onnx_model(path: str | Path, *, labels: tuple[str, ...] | None = None, device: str | None = None,
                    precision: str = "fp32") -> LoadedModel:
    """An ONNX file as a model: its graph converted to PyTorch, fed as its input says.

    Preprocessing: the input's fixed square size as the crop (resized to 256/224
    of it first, as ImageNet models are), else 224; ImageNet's mean and std.
    Class names: `labels`, a labels file beside it, ImageNet's for 1000 outputs,
    else 'class i'.

    Raises:
        WeightsError: one line (see onnx_files.load_onnx); the caller's model stays.
    """
    from cnnviewer.engine.models.onnx_files import load_onnx, same_on_a_batch

    path = Path(path)
    converted = load_onnx(path)
    size = converted.input_size
    preprocess = Preprocess(resize_size=round(size * 256 / 224), crop_size=size) if size else Preprocess()
    classes = converted.num_outputs or _num_outputs(converted.module)
    label = f"ONNX: {path.name}"
    channels = next((m.in_channels for m in converted.module.modules() if isinstance(m, torch.nn.Conv2d)), 3)
    if converted.shapes_in_graph and not same_on_a_batch(converted.module, channels, preprocess.crop_size):
        label += (" (its graph runs one image at a time: index a dataset with --batch-size 1; "
                  "lesion studies and synthesis, which batch, cannot use it)")
    return wrap_module(converted.module, path.name,
                       categories=_categories(classes, DEFAULT_MODEL, labels, labels_beside(path)),
                       weights_label=label, trained=True, weights_path=str(path.resolve()),
                       device=device, precision=precision, preprocess=preprocess)


def non_finite(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or inf."""
    return [name for name, tensor in state_dict.items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def prefix_variants(state_dict: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The state dict as saved, then without a wrapper prefix that every key shares.

    Training frameworks keep the network as an attribute (PyTorch Lightning's
    `self.model`, `self.net`, `self.backbone`), so every key starts 'model.'.
    """
    variants = [state_dict]
    heads = {key.split(".", 1)[0] for key in state_dict}
    if len(heads) == 1 and all("." in key for key in state_dict):
        variants.append({key.split(".", 1)[1]: value for key, value in state_dict.items()})
    return variants


def _fresh_copy(current: LoadedModel) -> torch.nn.Module:
    """A new, untrained instance of the current architecture on the CPU."""
    if current.name in classification_models():  # rebuild: the current weights stay untouched
        num_classes = _num_outputs(current.module) or 1000
        return torchvision.models.get_model(current.name, weights=None, num_classes=num_classes)
    return copy.deepcopy(current.module).float().cpu()


def _wrap_segmentation(name: str, state_dict, path: Path, current: LoadedModel | None, label: str,
                       labels: tuple[str, ...] | None, beside: tuple[str, ...] | None, device: str | None,
                       precision: str) -> LoadedModel:
    """A segmentation network's state dict loaded while another model was current: VOC's names."""
    from cnnviewer.engine.segmentation import models as segmentation
    module = segmentation.build(name)
    fit_state_dict(module, segmentation.without_aux(state_dict), source=path.name, model_name=name)
    voc = tuple(default_weights(name).meta["categories"])
    return wrap_module(module, name, categories=labels or beside or voc, weights_label=label, trained=True,
                       weights_path=str(path), device=device or (str(current.device) if current else None),
                       precision=precision, preprocess=segmentation.preprocess_of(name))


def _efficientnet_pytorch(state_dict, path: Path, current: LoadedModel | None, label: str,
                          labels: tuple[str, ...] | None, beside: tuple[str, ...] | None,
                          device: str | None, precision: str) -> LoadedModel:
    """An efficientnet_pytorch file: into the current timm EfficientNet if it fits, else the one it fits."""
    from cnnviewer.engine.models import effnet_keys, timm_models
    module, name = None, None
    if current is not None and timm_models.is_timm(current.name):
        try:
            module = _fresh_copy(current)
            effnet_keys.load_efficientnet_pytorch(module, state_dict, path.name)
            name = current.name
        except WeightsError:
            module = None
    if module is None:
        module, name = effnet_keys.find_architecture(state_dict, path.name)
    return _wrap_timm(module, name, path, current, label, labels, beside, device, precision)


def _wrap_timm(module: torch.nn.Module, name: str, path: Path, current: LoadedModel | None, label: str,
               labels: tuple[str, ...] | None, beside: tuple[str, ...] | None, device: str | None,
               precision: str) -> LoadedModel:
    """A timm module loaded from a file: ImageNet names for 1000 classes, timm's preprocessing."""
    from cnnviewer.engine.models import timm_models
    classes = getattr(module, "num_classes", 0) or _num_outputs(module)
    categories = labels or beside or (timm_models.imagenet_categories() if classes == 1000
                                      else tuple(f"class {i}" for i in range(classes)))
    return wrap_module(module, name, categories=categories, weights_label=label, trained=True,
                       weights_path=str(path), device=device or (str(current.device) if current else None),
                       precision=precision, preprocess=timm_models.preprocess_of(module))
