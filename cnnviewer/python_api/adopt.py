"""An in-memory nn.Module made into the LoadedModel every panel reads (job thread only).

Snapshot (the default) is a deep copy: the caller's training loop may go on writing its own
weights while the window looks at the copy. Live shares the caller's parameter and buffer storage
through a copy of the module tree only, so the views see each optimizer step (in-place updates) when
they next run, while eval mode and requires_grad are switched on the copy, never on the caller's
module: the caller's modes, flags and hooks are left exactly as found either way.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnviewer.engine.errors import ModelError, first_line
from cnnviewer.engine.models.handle import LoadedModel, Preprocess, wrap_module
from cnnviewer.python_api.inputs import FROM_PYTHON
from cnnviewer.python_api.transforms import to_preprocess


def module_device(module: nn.Module) -> torch.device:
    """Where the module's first parameter (else buffer) lives; the CPU for a module with neither."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def snapshot(module: nn.Module) -> nn.Module:
    """A deep copy: weights, buffers and structure frozen as they are now.

    Raises:
        ModelError: the module cannot be deep-copied (one line, from copy.deepcopy's error).
    """
    try:
        return copy.deepcopy(module)
    except Exception as error:  # noqa: BLE001 - any failure of a user's __deepcopy__ becomes one line
        raise ModelError(f"cannot snapshot the model ({first_line(error)}); pass live=True to view it "
                         "without a copy") from None


def shared_copy(module: nn.Module) -> nn.Module:
    """A copy of the module tree whose parameters and buffers share the caller's storage.

    Each parameter becomes a new, detached Parameter on the same memory (so requires_grad can be
    switched off here alone); each buffer a detached alias. In-place updates by an optimizer or a
    BatchNorm in training show through; a tensor the caller replaces (`p.data = ...`) does not until
    the next `Viewer.refresh()`, which makes a new shared copy.
    """
    memo: dict[int, Any] = {}
    for parameter in module.parameters():
        memo[id(parameter)] = nn.Parameter(parameter.detach(), requires_grad=False)
    for buffer in module.buffers():
        memo[id(buffer)] = buffer.detach()
    try:
        return copy.deepcopy(module, memo)
    except Exception as error:  # noqa: BLE001 - as in snapshot
        raise ModelError(f"cannot view the model live ({first_line(error)})") from None


def _categories(labels: Sequence[str] | None, module: nn.Module) -> tuple[str, ...] | None:
    """The caller's labels, else ImageNet's names for a 1000-way output, else None ('class i')."""
    if labels is not None:
        if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
            raise ModelError("labels must be a sequence of class names (strings)")
        return tuple(labels)
    from cnnviewer.engine.models.loading import _num_outputs
    if _num_outputs(module) == 1000:
        from cnnviewer.engine.models.timm_models import imagenet_categories
        return imagenet_categories()
    return None


def inferred_preprocess(module: nn.Module) -> Preprocess:
    """What the app would use: timm's pretrained_cfg for a timm model, torchvision's ImageNet default
    otherwise (input channels come from the first convolution, in LoadedModel)."""
    if getattr(module, "pretrained_cfg", None):
        from cnnviewer.engine.models.timm_models import preprocess_of
        return preprocess_of(module)
    return Preprocess()


def adopt(module: Any, *, name: str, labels: Sequence[str] | None = None, preprocess: Any = None,
          live: bool = False) -> LoadedModel:
    """Wrap the caller's module for the panels, leaving it exactly as found.

    Args:
        module: the caller's nn.Module (never modified: not its mode, flags, device nor hooks).
        name: shown in the title bar, with " (from Python)" appended.
        labels: class names, index i for output i.
        preprocess: a torchvision transform (see transforms.to_preprocess), or a Preprocess; None: inferred.
        live: share the caller's weights (see shared_copy) instead of copying them.

    Raises:
        ModelError: not an nn.Module, cannot be copied, an unmappable preprocess, bad labels, or
            (live) weights that are not float32: any conversion would copy them.
    """
    if not isinstance(module, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(module).__name__}")
    if live and any(t.is_floating_point() and t.dtype != torch.float32 for t in module.parameters()):
        raise ModelError("live=True needs float32 weights (converting them would make a copy); "
                         "use the default snapshot")
    steps = preprocess if isinstance(preprocess, Preprocess) else (
        to_preprocess(preprocess) if preprocess is not None else inferred_preprocess(module))
    categories = _categories(labels, module)
    view = shared_copy(module) if live else snapshot(module)
    return wrap_module(view, name if name.endswith(FROM_PYTHON) else name + FROM_PYTHON,
                       categories=categories, weights_label=f"in-memory module ({'live' if live else 'snapshot'})",
                       trained=True, device=str(module_device(module)), preprocess=steps)


def adopt_checked(module: Any, **options: Any) -> LoadedModel:
    """`adopt`, then one forward pass on a blank input, so a model that cannot run is refused here."""
    from cnnviewer.engine.runtime.inference import check_runs
    loaded = adopt(module, **options)
    check_runs(loaded)
    return loaded
