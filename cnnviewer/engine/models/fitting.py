"""Fit a state dict to a model (every key and shape checked first), or find the torchvision architecture it fits."""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from cnnviewer.engine.errors import WeightsError, first_line

Signature = dict[str, tuple[int, ...]]   # state-dict key -> tensor shape


_TOLERATED_MISSING = ("num_batches_tracked",)  # absent in older checkpoints


@dataclass(frozen=True)
class ArchitectureMatch:
    """The torchvision classifier a state dict was saved from.

    Build it with ``torchvision.models.get_model(match.name, **match.kwargs)``.
    """

    name: str          # torchvision model name, e.g. 'resnet18'
    num_classes: int   # from the file, e.g. 10
    adapted: bool      # num_classes differs from the default 1000
    options: tuple[tuple[str, Any], ...] = ()   # other builder kwargs, e.g. aux_logits=False

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``get_model`` that rebuild this architecture."""
        return {"num_classes": self.num_classes, **dict(self.options)}


def fit_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], *,
                   source: str = "", model_name: str = "") -> None:
    """Load ``state_dict`` into ``model`` only if every key and shape fits.

    Mismatches are found before anything is copied, so a failed fit leaves
    the model untouched. ``num_batches_tracked`` buffers missing from the file
    are tolerated (older checkpoints lack them) and keep the model's values.

    Args:
        model: The model to fill in place.
        state_dict: Normalised weights (see ``normalize_state_dict``).
        source: What to call the weights in messages, e.g. the file name.
        model_name: What to call the model; defaults to its class name.

    Raises:
        WeightsError: Keys missing, unexpected or of the wrong shape, listing
            the counts and the first three names of each.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith(_TOLERATED_MISSING)]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in state_dict if k in own and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    source = source or "the weights"
    model_name = model_name or type(model).__name__
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing ({_first3(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_first3(unexpected)})" if unexpected else "",
                 f"{len(wrong)} wrong shape ({_first3(wrong, state_dict, own)})" if wrong else ""]
        raise WeightsError(f"{source} does not fit {model_name}: "
                           + ", ".join(p for p in parts if p))
    full = dict(state_dict)
    for key in own:
        full.setdefault(key, own[key])   # only tolerated buffers remain to fill
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as exc:   # a module's own _load_from_state_dict refused it
        raise WeightsError(f"{source} does not fit {model_name}: {first_line(exc)}") from exc


def _first3(keys: list[str], theirs: Mapping[str, Tensor] | None = None,
            ours: Mapping[str, Tensor] | None = None) -> str:
    if theirs is None or ours is None:
        return ", ".join(keys[:3])
    return ", ".join(f"{k}: file {list(theirs[k].shape)} vs model {list(ours[k].shape)}"
                     for k in keys[:3])


def infer_architecture(state_dict: Mapping[str, Tensor], *, source: str = "") -> ArchitectureMatch:
    """Find the torchvision classifier whose names and shapes ``state_dict`` has.

    Only the classifier head may differ, and only in its number of classes.
    Candidates are built on the meta device (no memory, no init) once per
    process; when several architectures share a signature, the first in
    ``list_models`` order wins.

    Args:
        state_dict: Normalised weights.
        source: What to call the weights in messages, e.g. the file name.

    Raises:
        WeightsError: No architecture matches; names the closest one.
    """
    source = source or "the weights"
    theirs = {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith(_TOLERATED_MISSING)}
    if not theirs:
        raise WeightsError(f"{source}: empty state dict, nothing to match")
    keys = frozenset(theirs)
    closest: tuple[int, str] | None = None
    for name in _classifier_names():
        for options in _VARIANTS.get(name, ((),)):
            ours = _signature(name, 1000, options)
            if ours is None:
                continue
            wrong = [k for k in keys & ours.keys() if theirs[k] != ours[k]]
            if keys == ours.keys():
                num_classes = _head_classes(wrong, theirs, ours)
                if num_classes is not None and _signature(name, num_classes, options) == theirs:
                    return ArchitectureMatch(name, num_classes, num_classes != 1000, options)
            differ = len(keys ^ ours.keys()) + sum(not _head_like(theirs[k], ours[k]) for k in wrong)
            if closest is None or differ < closest[0]:
                closest = (differ, name)
    hint = f"; closest: {closest[1]} ({closest[0]} keys differ)" if closest else ""
    raise WeightsError(f"no torchvision architecture matches {source} ({len(theirs)} tensors){hint}")


# googlenet and inception_v3 are often saved without their auxiliary heads.
_VARIANTS: dict[str, tuple[tuple[tuple[str, Any], ...], ...]] = {
    "googlenet": ((), (("aux_logits", False),)),
    "inception_v3": ((), (("aux_logits", False),)),
}


def _head_classes(wrong: list[str], theirs: Signature, ours: Signature) -> int | None:
    """Return the file's class count if only the 1000-way head differs, else None."""
    if not all(_head_like(theirs[k], ours[k]) for k in wrong):
        return None
    sizes = {theirs[k][0] for k in wrong} or {1000}
    return sizes.pop() if len(sizes) == 1 else None


def _head_like(theirs: tuple[int, ...], ours: tuple[int, ...]) -> bool:
    """True when only the leading 1000 (classes) of a head tensor differs."""
    return bool(theirs) and bool(ours) and ours[0] == 1000 and theirs[1:] == ours[1:]


@functools.cache
def _classifier_names() -> tuple[str, ...]:
    """Classification models only: detection, video etc. live in submodules."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


_BUILD_LOCK = threading.Lock()   # _meta_device patches torchvision while building


@functools.cache
def _signature(name: str, num_classes: int, options: tuple[tuple[str, Any], ...]) -> Signature | None:
    """Key -> shape of ``get_model(name)`` built on meta; None if it cannot be built."""
    try:
        with _BUILD_LOCK, _meta_device(), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # e.g. googlenet's init_weights notice
            model = torchvision.models.get_model(name, num_classes=num_classes, **dict(options))
    except Exception:   # an architecture that cannot be built is simply no candidate
        return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.endswith(_TOLERATED_MISSING)}


@contextmanager
def _meta_device() -> Iterator[None]:
    """Create parameters on meta, but let RegNet compute its widths on the CPU.

    RegNet's builder turns a tensor into a Python list, which meta tensors
    cannot do; its width maths is tiny, so it runs under a nested CPU device.
    """
    from torchvision.models.regnet import BlockParams

    original = BlockParams.__dict__["from_init_params"]
    bound = BlockParams.from_init_params

    def on_cpu(*args: Any, **kwargs: Any) -> Any:
        with torch.device("cpu"):
            return bound(*args, **kwargs)

    BlockParams.from_init_params = on_cpu   # type: ignore[method-assign]
    try:
        with torch.device("meta"):
            yield
    finally:
        BlockParams.from_init_params = original   # type: ignore[method-assign]
