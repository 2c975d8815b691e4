"""Knock-outs: the same network with some channels zeroed, set to a mean, or scaled.

`intervene` builds a derived LoadedModel and never touches the user's module. Only the modules on
the path from the root to each knocked-out layer are copied (`copy.copy` with fresh `_modules`,
`_parameters`, `_buffers` and hook dicts: the tensors are shared, not duplicated); the copied target
gets a dynamic subclass (same class name) whose forward applies `output * scale + shift` per
channel. No hook is registered and names and children are unchanged, so the activation recorder
(torch.fx or hooks), the gradient views, the receptive fields and the summary all see the
intervened computation as it is.

torch is imported inside the functions: the window's thread imports this module's Knockout.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.experiments.ablate_spec import (
    AblationError,
    InterventionEffect,
    Knockout,
    parse_ablation,
)

if TYPE_CHECKING:
    import threading

    import torch
    from torch import nn

    from cnnviewer.engine.dataset.index import DatasetIndex
    from cnnviewer.engine.media.images import InputImage
    from cnnviewer.engine.models.handle import LoadedModel
    from cnnviewer.engine.types import Prediction

__all__ = [
    "AblationError",
    "InterventionEffect",
    "Knockout",
    "channel_means",
    "folder_channel_means",
    "intervene",
    "intervention_effect",
    "layer_channels",
    "parse_ablation",
    "resolve_means",
]

_knocked_classes: dict[type, type] = {}


def _knocked_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The original forward, then each knocked channel c becomes out[:, c] * scale[c] + shift[c]."""
    output = type(self)._knockout_base.forward(self, *args, **kwargs)
    scale = self.__dict__.get("_knockout_scale")
    if scale is None:                       # the shape probe of `intervene`: each call's output kept
        self.__dict__.setdefault("_knockout_seen", []).append(output)
        return output
    import torch
    return torch.addcmul(self.__dict__["_knockout_shift"], output, scale)


def _knocked_class(base: type) -> type:
    """A subclass of `base` with the knock-out forward, named like `base` (views show the same type)."""
    found = _knocked_classes.get(base)
    if found is None:
        found = type(base.__name__, (base,), {"forward": _knocked_forward, "_knockout_base": base,
                                              "__module__": base.__module__,
                                              "__qualname__": base.__qualname__})
        _knocked_classes[base] = found
    return found


def _detached_copy(module: nn.Module) -> nn.Module:
    """A shallow copy that shares tensors and children but no mutable registry (children, parameters,
    buffers, hooks) with `module`: changing the copy's registries never changes the original."""
    copied = copy.copy(module)
    for key, value in list(vars(module).items()):
        if isinstance(value, (dict, set)):
            copied.__dict__[key] = copy.copy(value)
    return copied


def _copy_path(root: nn.Module, layers: Sequence[str]) -> tuple[nn.Module, dict[str, nn.Module]]:
    """(a root whose path to each layer is copied, each layer's copy)."""
    new_root = _detached_copy(root)
    copies: dict[str, nn.Module] = {"": new_root}
    for layer in layers:
        parent, path = new_root, ""
        for part in layer.split(".") if layer else []:
            path = f"{path}.{part}" if path else part
            if path not in copies:
                child = parent._modules.get(part)
                if child is None:
                    raise AblationError(f"--ablate: no layer {layer!r} in this model")
                copies[path] = _detached_copy(child)
                parent._modules[part] = copies[path]
            parent = copies[path]
    return new_root, copies


def layer_channels(model: LoadedModel, layer: str) -> int:
    """The number of output channels (dimension 1) of `layer` for the model's input size."""
    return _probe(model, [layer])[layer][1]


def _probe(model: LoadedModel, layers: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Output shapes of `layers`, from one pass of a throwaway path copy (no hook on the model)."""
    import torch

    from cnnviewer.engine.runtime.modes import eval_mode
    base = model.intact if model.intact is not None else model
    if isinstance(base.module, torch.jit.ScriptModule):
        raise AblationError(f"{base.name} is TorchScript (compiled): its layers cannot be knocked out; "
                            "load the Python model with its weights instead")
    _check_names(base, layers)
    root, copies = _copy_path(base.module, layers)
    for layer in layers:
        copies[layer].__class__ = _knocked_class(type(copies[layer]))
    size = base.preprocess.crop_size
    inputs = torch.zeros(1, base.input_channels, size, size, device=base.device, dtype=base.dtype)
    with eval_mode(root), torch.inference_mode():
        root(inputs)
    shapes = {}
    for layer in layers:
        calls = copies[layer].__dict__.pop("_knockout_seen", [])
        if len(calls) > 1:      # ResNet's shared relu: one module, several places, even several widths
            raise AblationError(f"{layer} runs {len(calls)} times in one forward pass (one module used in several "
                                "places): knock out the layer before it at each place instead")
        seen = calls[0] if calls else None
        if not isinstance(seen, torch.Tensor) or seen.dim() < 2:
            raise AblationError(f"{layer or 'the output'} gives no (N, C, ...) tensor: it has no channels to knock out")
        shapes[layer] = tuple(seen.shape)
    return shapes


def _check_names(model: LoadedModel, layers: Sequence[str]) -> None:
    names = set(model.layer_names)
    for layer in layers:
        if layer not in names:
            import difflib
            near = difflib.get_close_matches(layer, [n for n in model.layer_names if n], n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(near)}?" if near else ""
            raise AblationError(f"no layer {layer!r} in {model.name}{hint}")


def intervene(model: LoadedModel, knockouts: Sequence[Knockout]) -> LoadedModel:
    """`model` with `knockouts` applied, as a new LoadedModel (new token; same name, categories,
    preprocess and layer names); `intact` is the untouched model, `interventions` all knock-outs.

    An intervened `model` gains the new knock-outs on top of its own (built again from its intact
    model, never nested); no knock-out at all returns the intact model. Raises AblationError for an
    unknown layer or a channel out of range.
    """
    import torch

    base = model.intact if model.intact is not None else model
    every = tuple(model.interventions) + tuple(knockouts)
    if not every:
        return base
    layers = list(dict.fromkeys(k.layer for k in every))
    shapes = _probe(base, layers)
    root, copies = _copy_path(base.module, layers)
    for layer in layers:
        shape = shapes[layer]
        scale = torch.ones(shape[1], dtype=torch.float64)
        shift = torch.zeros(shape[1], dtype=torch.float64)
        for knockout in (k for k in every if k.layer == layer):
            index = _channel_index(knockout, shape[1])
            if knockout.mode == "scale":
                scale[index] *= knockout.factor
                shift[index] *= knockout.factor
            else:       # zero, or the constant mean: later knock-outs of a channel replace earlier ones
                scale[index] = 0.0
                shift[index] = 0.0 if knockout.mode == "zero" else torch.tensor(knockout.means, dtype=torch.float64)
        view = (1, shape[1]) + (1,) * (len(shape) - 2)
        target = copies[layer]
        target.__class__ = _knocked_class(type(target))
        target.__dict__["_knockout_scale"] = scale.to(base.device, base.dtype).view(view)
        target.__dict__["_knockout_shift"] = shift.to(base.device, base.dtype).view(view)
    derived = dataclasses.replace(base, module=root, token=_new_token(), intact=base, interventions=every)
    from cnnviewer.engine.runtime.inference import check_runs
    check_runs(derived)     # a knocked model that cannot run is refused here, in one line, not in every panel
    return derived


def _new_token() -> int:
    from cnnviewer.engine.models import handle
    return next(handle._tokens)


def _channel_index(knockout: Knockout, channels: int) -> list[int]:
    bad = [c for c in knockout.channels if c >= channels]
    if bad:
        raise AblationError(f"{knockout.layer} has {channels} channels (0-{channels - 1}); "
                            f"channel {bad[0]} is out of range")
    return list(knockout.channels)


def channel_means(model: LoadedModel, inputs: torch.Tensor, layer: str,
                  channels: Sequence[int]) -> tuple[float, ...]:
    """Each channel's mean over this input's map (all positions; the batch's mean too).

    Args:
        model: the model whose activations are averaged (intervened or not).
        inputs: (N, C, H, W) prepared input, on the model's device.
        layer: dotted layer name.
        channels: output channels of `layer`.
    """
    from cnnviewer.engine.runtime.recording import capture_activations
    _check_names(model.intact if model.intact is not None else model, [layer])
    _output, recorded = capture_activations(model.module, inputs.to(model.device, model.dtype))
    seen = recorded.get(layer)
    if seen is None or seen.dim() < 2:
        raise AblationError(f"{layer} gives no (N, C, ...) tensor: it has no channels to average")
    count = seen.shape[1]
    _channel_index(Knockout(layer, tuple(channels)), count)
    dims = [0] + list(range(2, seen.dim()))
    means = seen.float().mean(dim=dims)
    return tuple(float(means[c]) for c in channels)


def folder_channel_means(index: DatasetIndex, layer: str, channels: Sequence[int]) -> tuple[tuple[float, ...], str]:
    """(each channel's mean over the indexed folder, the source text), from `<layer>.mean.npy`.

    Each image's spatial mean was stored when the folder was indexed; their average over the valid
    images is the folder mean. Raises AblationError when the layer is not indexed.
    """
    import numpy as np

    if layer not in index.layers:
        raise AblationError(f"{layer} is not indexed for {Path(str(index.folder)).name}/; index it "
                            "(Dataset panel, or `cnnviewer index --layers`) or use the mean over this image")
    rows = np.asarray(index.valid_rows)
    values = np.asarray(index.array(layer, "mean"))[rows] if len(rows) else np.zeros((0, 0))
    if not len(values):
        raise AblationError(f"no image of {Path(str(index.folder)).name}/ is indexed yet")
    bad = [c for c in channels if c >= values.shape[1]]
    if bad:
        raise AblationError(f"{layer} has {values.shape[1]} channels; channel {bad[0]} is out of range")
    means = values[:, list(channels)].astype(np.float64).mean(axis=0)
    return tuple(float(m) for m in means), f"folder {Path(str(index.folder)).name}/ ({len(values)} images)"


def resolve_means(model: LoadedModel, inputs: torch.Tensor | None, knockouts: Sequence[Knockout],
                  cancel: threading.Event | None = None,
                  progress: Callable[[float], None] | None = None) -> tuple[Knockout, ...]:
    """The knock-outs with each 'mean over this image' measured on `inputs` (as the CLI's parse left
    placeholders), measured on the intact model; others unchanged."""
    resolved = []
    for i, knockout in enumerate(knockouts):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if knockout.mode == "mean" and knockout.source == "this image":
            if inputs is None:
                raise AblationError(f"{knockout.layer}: 'mean' needs an input image to average over")
            means = channel_means(model, inputs, knockout.layer, knockout.channels)
            knockout = dataclasses.replace(knockout, means=means)
        resolved.append(knockout)
        if progress is not None:
            progress((i + 1) / len(knockouts))
    return tuple(resolved)


def intervention_effect(model: LoadedModel, image: InputImage,
                        predictions: Sequence[Prediction]) -> InterventionEffect | None:
    """The intact model's probabilities beside the intervened model's shown top-5 (None for an
    intact model). One plain forward of each model, no recording (the activation cache keeps the
    intervened pass the panels draw from)."""
    import torch

    from cnnviewer.engine.runtime.inference import prepare_input, top_k
    from cnnviewer.engine.runtime.outputs import first_tensor
    if model.intact is None:
        return None

    def probabilities(loaded: LoadedModel):
        prepared = prepare_input(image, loaded.preprocess, loaded.device, loaded.dtype, loaded.input_channels)
        with torch.inference_mode():
            logits = first_tensor(loaded.module(prepared.tensor))
        if logits is None:
            raise AblationError(f"{loaded.title} gives no tensor output to compare")
        return torch.softmax(logits.detach().float().reshape(logits.shape[0], -1)[0], dim=0).cpu().numpy()

    intact, knocked = probabilities(model.intact), probabilities(model)
    top = top_k(model.intact, intact, 5)
    return InterventionEffect(model.token, tuple(float(intact[p.index]) for p in predictions),
                              tuple((p.label, p.index, p.probability) for p in top),
                              tuple(float(knocked[p.index]) for p in top))
