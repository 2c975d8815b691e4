"""The model-parameter randomization test of Adebayo et al. 2018 ("Sanity checks for saliency maps").

A copy of the model has its weights re-initialised from the logits down to the first
convolution, one block (or layer) at a time; every method's map is recomputed at each
stage and compared with the trained model's map (similarity.py). A method whose map barely
changes once nothing learned is left cannot be showing what the model learned.

Cascading mode randomizes ONE copy incrementally (stage k adds its block to stages < k),
independent mode randomizes one block of one copy and puts it back before the next, so the
whole check costs one deep copy. Each module's new weights come from a generator seeded by
(seed, module name), so a stage's copy does not depend on the order it was built in.
"""

from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnviewer.engine.attribution import gradients
from cnnviewer.engine.attribution.methods import attribute
from cnnviewer.engine.attribution.similarity import (
    SanityResult,
    is_failing,
    rank_correlation,
    structural_similarity,
)
from cnnviewer.engine.attribution.target import CAM_METHODS, SLOW_METHODS, Target
from cnnviewer.engine.errors import Cancelled

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
OWN = ":own"   # suffix: only the module's own parameters (a class token), not its children's


def _label(name: str) -> str:
    """A stage's name as shown: the module's name; its own parameters only when its children stay."""
    if not name.endswith(OWN):
        return name
    module = name.removesuffix(OWN)
    return module if module else "(the model's own parameters)"


def _has_parameters(module: nn.Module, recurse: bool = True) -> bool:
    return next(module.parameters(recurse=recurse), None) is not None


def _blocks(module: nn.Module, prefix: str) -> list[str]:
    """The natural blocks under `module`, in registration order.

    A plain container (exactly Sequential / ModuleList / ModuleDict, not a subclass such as
    torchvision's Conv2dNormActivation, itself one conv-BN-ReLU block) is opened up when it holds
    blocks (MobileNetV2's `features`, ResNet's `layer4`) or more than two parameterised layers
    (VGG's `features` and `classifier`); a conv with its norm, or dropout and a linear
    (MobileNetV2's `classifier`), stays one block. Anything else with parameters is a block.
    """
    names = []
    for name, child in module.named_children():
        if not _has_parameters(child):
            continue
        full = f"{prefix}{name}"
        children = [c for c in child.children() if _has_parameters(c)]
        composite = any(_has_parameters(g) for c in children for g in c.children())
        if type(child) in _CONTAINERS and len(children) > 1 and (composite or len(children) > 2):
            names.extend(_blocks(child, f"{full}."))
        else:
            names.append(full)
    return names


def randomization_stages(module: nn.Module, granularity: str = "block") -> list[tuple[str, list[str]]]:
    """(stage name, module names it randomizes), from the output down (reverse registration order).

    "block": the natural blocks (`_blocks`; MobileNetV2: classifier, features.18 ... features.0;
    ResNet: fc, layer4.1, ..., layer1.0, bn1, conv1); a model that is one wrapper is opened.
    "layer": every module holding parameters of its own (each conv, BN and linear), its own only.
    A name ending in OWN (":own") means that module's own parameters, not its children's.
    Registration order is the forward order for torchvision and timm classifiers; the check
    needs no input to find its stages.
    """
    if granularity == "block":
        top = module
        prefix = ""
        while True:   # a model that wraps one parameterised module: look inside it
            children = [(n, c) for n, c in top.named_children() if _has_parameters(c)]
            if len(children) != 1 or _has_parameters(top, recurse=False):
                break
            prefix, top = f"{prefix}{children[0][0]}.", children[0][1]
        names = _blocks(top, prefix)
        if _has_parameters(top, recurse=False):
            names.insert(0, prefix.rstrip(".") + OWN)   # the model's own tensors (a class token) go first
        stages = [(_label(name), [name]) for name in names]
    elif granularity == "layer":
        stages = [(_label(name + OWN), [name + OWN]) for name, m in module.named_modules()
                  if _has_parameters(m, recurse=False)]
    else:
        raise ValueError(f"unknown granularity {granularity!r}; choose 'block' or 'layer'")
    if not stages:
        raise ValueError("the model has no parameters to randomize")
    return stages[::-1]


def _seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 63)


def _reinitialise(root: nn.Module, name: str, seed: int) -> None:
    """Re-initialise every parameter (and BN statistics) under `root`'s module `name`, in place.

    Modules with `reset_parameters` (conv, linear, BN, LayerNorm, ...) use it, as Quantus'
    ModelParameterRandomisation and PyTorch's own initialisation do; a parameter no such module
    owns (a layer scale, a class token) is drawn from N(0, σ²), σ its trained values' spread.

    BatchNorm's running statistics are reset too (mean 0, variance 1: `reset_parameters`), so a
    randomized BN is an identity. Adebayo et al.'s code kept TensorFlow's moving statistics (it
    re-initialised trainable variables only), nearly harmless for Inception v3's ReLUs, which
    ignore scale; MobileNetV2's ReLU6 does not: trained statistics applied to random convolutions
    make activations grow ~5x per block (measured: the saliency map's maximum went from 0.24 to
    2e13 over the cascade), ReLU6 saturates and passes no gradient, and guided backprop's map
    turns to blobs that say more about the saturation than about the method.
    """
    own_only = name.endswith(OWN)
    name = name.removesuffix(OWN)
    target = root.get_submodule(name) if name else root
    devices = sorted({p.device.index for p in target.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(_seed(seed, name))
        covered: set[int] = set()
        with torch.no_grad():
            for module in [target] if own_only else target.modules():
                own = list(module.parameters(recurse=False))
                if not own:
                    continue
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                    covered.update(id(p) for p in own)
                for parameter in own:
                    if id(parameter) not in covered:
                        spread = float(parameter.float().std()) if parameter.numel() > 1 else 0.0
                        parameter.normal_(0.0, spread if spread > 0 else 0.02)


def randomized_copy(module: nn.Module, names: Iterable[str], seed: int = 0) -> nn.Module:
    """A deep copy of `module` with the named modules' parameters re-initialised (`_reinitialise`).

    The original is untouched: its parameters, buffers, modes, flags and hooks stay as they were.
    BatchNorm running statistics in the named modules are reset with their weights (why: `_reinitialise`).
    """
    clone = copy.deepcopy(module)
    for name in names:
        _reinitialise(clone, name, seed)
    return clone


def _stage_map(method: str, attribution: torch.Tensor) -> np.ndarray:
    """(H, W) float32: a CAM as it is, any other method's max |a| over channels (gradients.to_map)."""
    if method in CAM_METHODS:
        return np.ascontiguousarray(attribution.detach()[0, 0].float().cpu().numpy())
    return np.ascontiguousarray(gradients.to_map(attribution))


def sanity_check(workbench, model, image, target: Target, methods: dict[str, dict], mode: str = "cascading",
                 granularity: str = "block", seed: int = 0, context=None, stages: int | None = None,
                 progress: Callable[[float], None] | None = None, cancel=None) -> SanityResult:
    """Randomize a copy of `model` stage by stage and compare every method's map with the original's.

    Args:
        workbench: the Workbench; `attribution_options` resolves each method's options as its view does.
        model: the LoadedModel (left exactly as found).
        image: the InputImage; target: what the maps explain (the view's Target).
        methods: method name -> options as the UI passes to Workbench.gradient.
        mode: "cascading" (from the logits down, cumulative) or "independent" (one block at a time).
        granularity: "block" or "layer" (randomization_stages).
        seed: the random weights' seed.
        context: a JobContext (its cancel flag and progress); or `cancel` / `progress` directly.
        stages: only the first this many stages from the output (None: all of them).

    Returns:
        A SanityResult: per method and stage the (H, W) float32 map, Spearman and SSIM with the original.
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"unknown mode {mode!r}; choose 'cascading' or 'independent'")
    if not methods:
        raise ValueError("choose at least one method")
    start = time.perf_counter()
    cancel = cancel if cancel is not None else (context.cancel if context is not None else None)

    def report(fraction: float) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if context is not None:
            context.progress(fraction, f"sanity check: {fraction:.0%}")
        if progress is not None:
            progress(fraction)

    plan = randomization_stages(model.module, granularity)
    complete = stages is None or stages >= len(plan)
    plan = plan if stages is None else plan[:stages]
    resolved: dict[str, tuple[Any, dict, dict]] = {}
    for method, options in methods.items():
        resolved[method] = workbench.attribution_options(model, image, method, target, None, **dict(options))
    display = next(iter(resolved.values()))[0].display
    total = (len(plan) + 1) * len(methods)
    done = 0

    def run(network: nn.Module) -> dict[str, np.ndarray]:
        nonlocal done
        maps = {}
        for method, (prepared, options, _) in resolved.items():
            report(done / total)
            options = dict(options)
            if method in SLOW_METHODS:
                base = done
                options["cancel"] = cancel
                options["progress"] = lambda f, base=base: report((base + f) / total)
            maps[method] = _stage_map(method, attribute(method, network, prepared.tensor, target,
                                                                  **options))
            done += 1
        return maps

    per_stage = [run(model.module)]
    work = copy.deepcopy(model.module)
    for _, names in plan:
        for name in names:
            _reinitialise(work, name, seed)
        per_stage.append(run(work))
        if mode == "independent":
            _restore(work, model.module, names)
    report(1.0)
    del work
    maps = {method: [stage[method] for stage in per_stage] for method in methods}
    spearman = {m: [rank_correlation(maps[m][0], x) for x in maps[m]] for m in methods}
    ssim = {m: [structural_similarity(maps[m][0], x) for x in maps[m]] for m in methods}
    failing = {m: is_failing(spearman[m]) for m in methods}
    return SanityResult(mode, ("original", *(name for name, _ in plan)), tuple(methods), maps, spearman, ssim,
                        failing, display, (time.perf_counter() - start) * 1000.0,
                        modules=((),) + tuple(tuple(names) for _, names in plan),
                        options={m: shown for m, (_, _, shown) in resolved.items()}, complete=complete)


def _restore(work: nn.Module, original: nn.Module, names: Iterable[str]) -> None:
    """Copy the original's parameters and buffers back into `work`'s named modules (independent mode)."""
    with torch.no_grad():
        for name in names:
            recurse = not name.endswith(OWN)
            name = name.removesuffix(OWN)
            source = original.get_submodule(name) if name else original
            destination = work.get_submodule(name) if name else work
            for mine, theirs in zip(destination.parameters(recurse=recurse), source.parameters(recurse=recurse)):
                mine.copy_(theirs)
            for mine, theirs in zip(destination.buffers(recurse=recurse), source.buffers(recurse=recurse)):
                mine.copy_(theirs)
