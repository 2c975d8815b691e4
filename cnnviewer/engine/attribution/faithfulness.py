"""Faithfulness of a map, measured on the model (job thread): deletion / insertion, ROAD, Average Drop.

- Deletion / insertion (Petsiuk et al. 2018): at step k the k/steps most relevant
  pixels are replaced by a substrate (deletion) or restored onto it (insertion);
  p(target) after each step, AUC by the trapezoid rule over the fraction.
- ROAD (Rong et al. 2022), as pytorch-grad-cam's `metrics/road.py`: at fixed
  percentiles the most (MoRF) or least (LeRF) relevant pixels are filled by noisy
  linear imputation; the score is the change of the target's logit, averaged over
  the percentiles, and ROADCombined's (LeRF − MoRF) / 2.
- Average Drop and Increase in Confidence (Chattopadhay et al. 2018), as torchcam's
  `ClassificationMetric`: the input multiplied by the min-max normalised map.

p(target) is the softmax probability of a class target; for a channel or neuron
target (no softmax exists), its score divided by the unperturbed score. The
perturbed images run as batches (one forward per batch of steps) through a copy of
the model with batch norms folded into their convolutions (`folded_copy`: the model
itself is never modified), in inference mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from threading import Event

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnviewer.engine.attribution.imputation import impute
from cnnviewer.engine.attribution.scorer import Scorer, fast_copy, model_scores
from cnnviewer.engine.attribution.scores import (
    SUBSTRATES,
    Curve,
    Faithfulness,
    pixel_order,
    ranking,
    step_counts,
    trapezoid,
)
from cnnviewer.engine.attribution.target import CAM_METHODS, Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.models.handle import IMAGENET_MEAN, IMAGENET_STD
from cnnviewer.engine.runtime.inference import input_statistics
from cnnviewer.engine.runtime.modes import eval_mode

ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
Progress = Callable[[float], None] | None


@contextmanager
def scoring_model(model: nn.Module, target: Target, fold: bool = True) -> Iterator[nn.Module]:
    """The model to score perturbed inputs with: eval mode, no autograd and, with `fold`, a private
    copy with batch norms folded into their convolutions and weights in channels-last layout.

    Measured on MobileNetV2, one thread, 224 px: a batch of 8 through the plain model costs 1.5x per
    image what single images do (contiguous layout); folded and channels-last, 0.7x.
    The copy is deep (the layout change rewrites weights), so the model itself is never touched.
    A `Scorer` (scorer.py) keeps such copies, and a faster traced one, across maps.
    """
    with eval_mode(model), torch.inference_mode():
        yield fast_copy(model, {target.layer} if target.layer else set())[0] if fold else model


@contextmanager
def _runner(model: nn.Module, target: Target, fold: bool, scorer: Scorer | None):
    """batch -> (raw, p) scores: through the cached `scorer` when given, else a copy made for this call."""
    if scorer is not None:
        if not scorer.matches(model, scorer.token):
            raise ValueError("the scorer was prepared for another model")
        yield lambda batch: scorer.scores(batch, target)
        return
    with scoring_model(model, target, fold) as fast:
        yield lambda batch: model_scores(fast, batch, target)


def _check(cancel: Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


def substrate_tensors(substrate: str, inputs: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict[str, Tensor]:
    """{"deletion": fill, "insertion": start} as (1, C, H, W) normalised tensors.

    black: 0 before normalising; mean colour: the dataset mean (0 after normalising); blurred:
    a Gaussian blur of the input, Petsiuk et al.'s 11 px, σ 5 at 224 px, scaled with the size.
    """
    if substrate not in SUBSTRATES:
        raise ValueError(f"unknown substrate {substrate!r}; choose {', '.join(SUBSTRATES)}")
    side = inputs.shape[-1]
    mean_t, std_t = (torch.tensor(values, dtype=inputs.dtype, device=inputs.device).view(1, -1, 1, 1)
                     for values in input_statistics(mean, std, inputs.shape[1]))

    def make(name: str) -> Tensor:
        if name == "black":
            return ((0 - mean_t) / std_t).expand_as(inputs).contiguous()
        if name == "mean colour":
            return torch.zeros_like(inputs)
        from torchvision.transforms.functional import gaussian_blur
        kernel = max(3, round(11 * side / 224) | 1)
        sigma = 5.0 * side / 224
        return gaussian_blur(inputs, [kernel, kernel], [sigma, sigma])

    if substrate == "paper":
        return {"deletion": make("black"), "insertion": make("blurred")}
    same = make(substrate)
    return {"deletion": same, "insertion": same}


def to_display(tensor: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """(N, C, H, W) or (C, H, W) normalised tensor -> (…, H, W, 3) uint8 as displayed."""
    values = tensor.detach().float().cpu()
    channels = values.shape[-3]
    mean_t, std_t = (torch.tensor(v).view(-1, 1, 1) for v in input_statistics(mean, std, channels))
    pixels = ((values * std_t + mean_t) * 255.0).round().clamp(0, 255).to(torch.uint8)
    if channels == 1:
        pixels = pixels.expand(*pixels.shape[:-3], 3, *pixels.shape[-2:])
    return np.ascontiguousarray(pixels.movedim(-3, -1).numpy())


def _as_map(heat) -> np.ndarray:
    values = heat.detach().float().cpu().numpy() if isinstance(heat, Tensor) else np.asarray(heat, np.float32)
    return values.reshape(values.shape[-2:]).astype(np.float32, copy=False)


def default_batch(inputs: Tensor) -> int:
    """Images per forward. On one CPU thread small batches win: MobileNetV2 at 224 px, folded and
    channels-last, costs 23.5 ms an image in batches of 4, 26 in 8s, 37 in 24s (cache), 39 one by one
    unfolded; an accelerator wants large ones."""
    return 4 if inputs.device.type == "cpu" else 32


def deletion_insertion(model: nn.Module, inputs: Tensor, target: Target, heat, steps: int = 50,
                       substrate: str = "paper", batch: int | None = None, cancel: Event | None = None,
                       progress: Progress = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       fold: bool = True, scorer: Scorer | None = None) -> dict[str, Curve]:
    """Deletion and insertion curves of the (H, W) relevance `heat` (most relevant pixels first).

    Images shared by both curves (the input itself; the substrate when both use the same) are
    scored once. Returns {"deletion": Curve, "insertion": Curve}, S = steps + 1 points each.
    `scorer`: the model's cached Scorer (else a folded copy is made for this call; `fold` False: none).
    """
    relevance = _as_map(heat)
    height, width = relevance.shape
    pixels = height * width
    order = pixel_order(relevance)
    rank = np.empty(pixels, dtype=np.int64)
    rank[order] = np.arange(pixels)
    rank_t = torch.from_numpy(rank).view(1, 1, height, width).to(inputs.device)
    fills = substrate_tensors(substrate, inputs, mean, std)
    counts = step_counts(pixels, steps)
    same = substrate != "paper"
    # Each image: (key, base, other, count) -> where(rank < count, other, base).
    wanted: dict[tuple, tuple[Tensor, Tensor, int]] = {}
    plan: dict[str, list[tuple]] = {"deletion": [], "insertion": []}
    for curve, base, other in (("deletion", inputs, fills["deletion"]), ("insertion", fills["insertion"], inputs)):
        for count in counts.tolist():
            if (curve == "deletion" and count == 0) or (curve == "insertion" and count == pixels):
                key = ("input",)
            elif same and (count == pixels or count == 0):
                key = ("substrate",)
            else:
                key = (curve, count)
            wanted.setdefault(key, (base, other, count))
            plan[curve].append(key)
    keys = list(wanted)
    batch = batch or default_batch(inputs)
    raw_values: dict[tuple, float] = {}
    with _runner(model, target, fold, scorer) as run:
        for start in range(0, len(keys), batch):
            _check(cancel)
            chunk = keys[start:start + batch]
            images = torch.cat([torch.where(rank_t < wanted[key][2], wanted[key][1], wanted[key][0])
                                for key in chunk]).contiguous(memory_format=torch.channels_last)
            _, values = run(images)
            raw_values.update(zip(chunk, values.tolist()))
            if progress is not None:
                progress(min(1.0, (start + len(chunk)) / len(keys)))
    scale = 1.0 if target.layer is None else _safe(raw_values[("input",)])
    fractions = counts / pixels
    return {curve: Curve(curve, fractions.copy(), np.array([raw_values[key] / scale for key in plan[curve]],
                                                           dtype=np.float64))
            for curve in ("deletion", "insertion")}


def _safe(value: float) -> float:
    """The unperturbed score a layer target is divided by (a zero score would divide by zero)."""
    return value if abs(value) > 1e-12 else 1e-12


def road_masks(heat, percentiles=ROAD_PERCENTILES) -> dict[str, list[np.ndarray]]:
    """The pixels each ROAD step keeps (1) per percentile, exactly as pytorch-grad-cam's
    RemoveMostRelevantFirst / RemoveLeastRelevantFirst threshold them (float32 compare)."""
    mask = torch.from_numpy(np.ascontiguousarray(_as_map(heat)))
    masks: dict[str, list[np.ndarray]] = {"road-morf": [], "road-lerf": []}
    for name, values in (("road-morf", mask), ("road-lerf", 1 - mask)):
        for percentile in percentiles:
            threshold = np.percentile(values.numpy(), percentile)
            masks[name].append((values < threshold).numpy().astype(np.float32))
    return masks


def road(model: nn.Module, inputs: Tensor, target: Target, heat, percentiles=ROAD_PERCENTILES,
         noise: float = 0.01, seed: int = 0, cancel: Event | None = None, progress: Progress = None,
         mean=IMAGENET_MEAN, std=IMAGENET_STD, fold: bool = True,
         scorer: Scorer | None = None) -> tuple[dict[str, Curve], dict[str, float]]:
    """ROAD MoRF and LeRF curves (p(target) against the fraction removed, 0 first) and scores.

    Scores: "road-morf", "road-lerf" = mean change of the target's logit (raw score for a layer
    target) over the percentiles; "road" = (lerf − morf) / 2, pytorch-grad-cam's ROADCombined.
    """
    masks = road_masks(heat, percentiles)
    rng = np.random.default_rng(seed)
    image = inputs[0].detach().float().cpu().numpy()
    jobs = [(name, keep) for name in ("road-morf", "road-lerf") for keep in masks[name]]
    imputed = []
    for index, (_, keep) in enumerate(jobs):
        _check(cancel)
        imputed.append(torch.from_numpy(impute(image, keep, noise, rng)))
        if progress is not None:
            progress(0.9 * (index + 1) / len(jobs))
    _check(cancel)
    batch = torch.stack(imputed).to(device=inputs.device, dtype=inputs.dtype)
    images = torch.cat([inputs, batch]).contiguous(memory_format=torch.channels_last)
    step = default_batch(inputs)
    with _runner(model, target, fold, scorer) as run:
        found = [run(images[i:i + step]) for i in range(0, len(images), step)]
    raw, probability = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
    if progress is not None:
        progress(1.0)
    scale = 1.0 if target.layer is None else _safe(float(raw[0]))
    frames = to_display(batch, mean, std)
    display = to_display(inputs[0], mean, std)
    curves, scores = {}, {}
    count = len(percentiles)
    for offset, name in enumerate(("road-morf", "road-lerf")):
        part = slice(1 + offset * count, 1 + (offset + 1) * count)
        removed = np.array([1.0 - keep.mean() for keep in masks[name]])
        order = np.argsort(removed, kind="stable")
        curves[name] = Curve(name, np.concatenate([[0.0], removed[order]]),
                             np.concatenate([[probability[0] / scale], probability[part][order] / scale]),
                             np.concatenate([display[None], frames[part.start - 1:part.stop - 1][order]]))
        scores[name] = float(np.mean((raw[part] - raw[0]).astype(np.float32)))
    scores["road"] = (scores["road-lerf"] - scores["road-morf"]) / 2
    return curves, scores


def average_drop_increase(model: nn.Module, inputs: Tensor, target: Target, cam) -> tuple[float, float]:
    """(Average Drop, Increase in Confidence) of one image, torchcam's definitions.

    The map is min-max normalised (torchcam's ε 1e-8), upsampled bilinearly to the input,
    multiplied into the normalised input; drop = max(0, p − p_masked) / p, increase = p < p_masked,
    p the softmax probability (the raw score for a layer target).
    """
    heat = torch.as_tensor(_as_map(cam), device=inputs.device, dtype=torch.float32)
    heat = heat - heat.min()
    heat = heat / (heat.max() + 1e-8)
    if tuple(heat.shape) != tuple(inputs.shape[-2:]):
        heat = F.interpolate(heat[None, None], size=inputs.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    with scoring_model(model, target, fold=False) as scorer:
        _, values = model_scores(scorer, torch.cat([inputs, heat.to(inputs.dtype) * inputs]), target)
    before, after = float(values[0]), float(values[1])
    return max(0.0, before - after) / (before + 1e-7), float(before < after)


def evaluate_result(workbench, model, image, result, metrics=("deletion", "insertion", "road"), steps: int = 50,
                    substrate: str = "paper", context=None, percentiles=ROAD_PERCENTILES,
                    noise: float = 0.01, seed: int = 0) -> Faithfulness:
    """Every requested score of one GradientResult, on the same prepared input the view used.

    `model` is a LoadedModel; CAM methods also get Average Drop and Increase in Confidence. The
    perturbed images run through the workbench's Scorer of the model, kept across maps.
    """
    start = time.perf_counter()
    prepared, _, _ = workbench.attribution_options(model, image, result.method, result.target, None,
                                                   **dict(result.options))
    inputs, module, target = prepared.tensor, model.module, result.target
    mean, std = model.preprocess.mean, model.preprocess.std
    relevance = ranking(result.method, result.attribution, result.options)
    cancel = context.cancel if context is not None else None
    scorer = workbench.scorer(model)
    scorer.begin_map()
    parts = [m for m in ("deletion", "road") if m in metrics or (m == "deletion" and "insertion" in metrics)]

    def stage(index: int, name: str) -> Progress:
        if context is None:
            return None
        return lambda f: context.progress((index + f) / len(parts), f"{result.method} {name}: {f:.0%}")

    curves: dict[str, Curve] = {}
    scores: dict[str, float] = {}
    substrates: dict[str, np.ndarray] = {}
    if "deletion" in parts:
        found = deletion_insertion(module, inputs, target, relevance, steps, substrate, cancel=cancel,
                                   progress=stage(parts.index("deletion"), "deletion / insertion"),
                                   mean=mean, std=std, scorer=scorer)
        fills = substrate_tensors(substrate, inputs, mean, std)
        for name in ("deletion", "insertion"):
            if name in metrics:
                curves[name] = found[name]
                scores[name] = found[name].auc()
                substrates[name] = to_display(fills[name][0], mean, std)
    if "road" in parts:
        low, high = float(relevance.min()), float(relevance.max())
        normalised = (relevance - low) / (high - low) if high > low else np.zeros_like(relevance)
        road_curves, road_scores = road(module, inputs, target, normalised, percentiles, noise, seed, cancel,
                                        stage(parts.index("road"), "ROAD"), mean=mean, std=std,
                                        scorer=scorer)
        curves.update(road_curves)
        scores.update(road_scores)
    if result.method in CAM_METHODS:
        _check(cancel)
        scores["average-drop"], scores["increase-in-confidence"] = average_drop_increase(
            module, inputs, target, result.attribution)
    return Faithfulness(result.method, target, curves, scores, pixel_order(relevance), substrates,
                        result.display, (time.perf_counter() - start) * 1000.0,
                        {"steps": steps, "substrate": substrate, "percentiles": tuple(percentiles), "noise": noise})


__all__ = ["average_drop_increase", "deletion_insertion", "evaluate_result", "road", "road_masks",
           "substrate_tensors", "to_display", "trapezoid"]
