"""Evaluate attribution over a folder: which method is most faithful for this model on my data?

For every image of a folder (or of its index) and every chosen method: one map, exactly as the
Gradients view draws it (`Workbench.gradient` with its default options), scored by
`faithfulness.evaluate_result` (deletion and insertion AUC, Petsiuk et al. 2018; ROAD, Rong et al.
2022; torchcam's Average Drop and Increase in Confidence for the CAM methods). The table is each
method's mean ± sd of every score over the images. The target is each image's top-1 class (one
batched forward per batch of images) or one class for all.

A `FolderRun` does the work in slices of one (image, method) pair, so the app's one job thread does
the other panels' work between them; `evaluate_images` runs one to its end (the CLI). Torch-free at
import: the GUI thread reads `FolderEvaluation` and the defaults; torch, the workbench and the
faithfulness engine load inside `FolderRun.run`, on the job thread. The cache beside an index is
evaluate_cache.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING

from cnnviewer.engine.attribution.scores import BETTER, LABELS
from cnnviewer.engine.attribution.target import METHODS
from cnnviewer.engine.errors import CnnViewerError, ImageError

if TYPE_CHECKING:
    from cnnviewer.engine.models.handle import LoadedModel
    from cnnviewer.engine.workbench import Workbench

# The cheap methods (one or two passes each): a folder's default. The slow ones (occlusion,
# integrated gradients, SmoothGrad, Score-CAM) cost tens of passes per image; the user ticks them.
DEFAULT_METHODS: tuple[str, ...] = ("saliency", "input-x-gradient", "guided-backprop", "grad-cam", "grad-cam++",
                                    "layer-cam")
METRICS: tuple[str, ...] = ("deletion", "insertion", "road")
DEFAULT_STEPS = 50           # evaluate_result's own default: the same curves as the Faithfulness view
BATCH = 8                    # images per top-1 forward (and per progress/cancel check of the reading)
# Score names in table order, with their direction; a score not listed here is shown after them.
SCORE_ORDER: tuple[str, ...] = ("deletion", "insertion", "road", "road-morf", "road-lerf", "average-drop",
                                "increase-in-confidence")


class EvaluationError(CnnViewerError):
    """A folder evaluation that cannot run as asked (one line: an unknown method, no image, ...)."""


def better(score: str) -> str:
    """'lower' or 'higher': which way of `score` is more faithful ('' for a score not known here)."""
    return BETTER.get(score, "")


def label(score: str) -> str:
    """'deletion AUC', 'ROAD', 'Average Drop': a score's name in tables."""
    return LABELS.get(score, score)


@dataclass(frozen=True)
class MethodScores:
    """One method's scores over the evaluated images.

    Attributes:
        method: a name of target.METHODS.
        values: score name -> one value per evaluated image, in `FolderEvaluation.images` order
            (None where the score was not finite or not produced for that image).
        seconds: time spent on this method (maps and scores) over all images.
    """

    method: str
    values: dict[str, tuple[float | None, ...]]
    seconds: float

    def _finite(self, score: str) -> list[float]:
        return [v for v in self.values.get(score, ()) if v is not None]

    def count(self, score: str) -> int:
        """How many images have a value of `score`."""
        return len(self._finite(score))

    def mean(self, score: str) -> float:
        """The mean over images (nan when no image has it)."""
        found = self._finite(score)
        return math.fsum(found) / len(found) if found else math.nan

    def sd(self, score: str) -> float:
        """The sample standard deviation over images (n − 1; 0 for one image, nan for none)."""
        found = self._finite(score)
        if len(found) < 2:
            return 0.0 if found else math.nan
        mean = math.fsum(found) / len(found)
        return math.sqrt(math.fsum((v - mean) ** 2 for v in found) / (len(found) - 1))


@dataclass(frozen=True)
class FolderEvaluation:
    """Each method's faithfulness over a folder's images.

    Attributes:
        methods: one MethodScores per method, in the order asked.
        metrics: the metrics asked ('deletion', 'insertion', 'road').
        target: the class scored in every image; None: each image's own top-1.
        steps: the steps of each deletion / insertion curve.
        substrate: what removed pixels become (evaluate_result's `substrate`).
        images: the evaluated images (paths relative to the folder when under it).
        skipped: (image, reason) of the files that could not be read.
        seconds: wall time of the evaluation (that of the run that computed it, for a cached one).
        cached: read back from the cache beside the index, not computed now.
    """

    methods: tuple[MethodScores, ...]
    metrics: tuple[str, ...]
    target: int | None
    steps: int
    substrate: str
    images: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    cached: bool = False
    model: str = field(default="", compare=False)

    def scores(self) -> tuple[str, ...]:
        """Every score some method has, in table order (the CAM-only ones after the rest)."""
        found = {score for row in self.methods for score, values in row.values.items()
                 if any(v is not None for v in values)}
        return tuple(s for s in SCORE_ORDER if s in found) + tuple(sorted(found - set(SCORE_ORDER)))

    def summary(self) -> dict:
        """A JSON-ready summary: per method and score, mean, sd, n and the better direction."""
        return {"model": self.model, "target": "top-1" if self.target is None else self.target,
                "steps": self.steps, "substrate": self.substrate, "metrics": list(self.metrics),
                "images": len(self.images), "skipped": [list(pair) for pair in self.skipped],
                "seconds": round(self.seconds, 3), "cached": self.cached,
                "methods": [{"method": row.method, "seconds": round(row.seconds, 3),
                             "scores": {score: {"mean": _json_number(row.mean(score)),
                                                "sd": _json_number(row.sd(score)), "n": row.count(score),
                                                "better": better(score)}
                                        for score in self.scores() if row.count(score)}}
                            for row in self.methods]}


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def check_request(methods: Sequence[str], metrics: Sequence[str], steps: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The methods and metrics without repeats, in order; EvaluationError (one line) for an unknown one."""
    methods, metrics = tuple(dict.fromkeys(methods)), tuple(dict.fromkeys(metrics))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise EvaluationError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}" if unknown
                              else "choose at least one method")
    wrong = [m for m in metrics if m not in METRICS]
    if wrong or not metrics:
        raise EvaluationError(f"unknown metric {wrong[0]!r}; choose from {', '.join(METRICS)}" if wrong
                              else "choose at least one metric")
    if not 2 <= steps <= 1000:
        raise EvaluationError(f"steps is {steps}; use 2 to 1000")
    return methods, metrics


def _name(path: Path, root: Path | None) -> str:
    try:
        return path.relative_to(root).as_posix() if root is not None else str(path)
    except ValueError:
        return str(path)


class FolderRun:
    """An evaluation in progress, run in slices: the app's one job thread does the other panels' work
    between them (a folder at 50 steps takes minutes), as an index build does.

    `run(seconds)` scores (image, method) pairs until `seconds` have passed, then returns; `result()`
    gives the table once `finished`. A Cancel raises Cancelled inside `run`; nothing of the run is
    kept anywhere but in this object.
    """

    def __init__(self, workbench: Workbench, model: LoadedModel, paths: Sequence[Path], *,
                 methods: Sequence[str] = DEFAULT_METHODS, metrics: Sequence[str] = METRICS,
                 target_class: int | None = None, steps: int = DEFAULT_STEPS, substrate: str = "paper",
                 root: Path | None = None, limit: int | None = None, batch: int = BATCH) -> None:
        self.methods, self.metrics = check_request(methods, metrics, steps)
        self.workbench, self.model, self.paths, self.root = workbench, model, list(paths), root
        self.target_class, self.steps, self.substrate, self.batch = target_class, steps, substrate, max(1, batch)
        self.wanted = len(self.paths) if limit is None else min(limit, len(self.paths))
        self.limited = limit is not None
        self.identity: dict | None = None          # set by evaluate_cache.start_index: the cache key
        self.names: list[str] = []                 # images taken, in order (their scores may be pending)
        self.skipped: list[tuple[str, str]] = []
        self.values: dict[str, list[dict[str, float | None]]] = {m: [] for m in self.methods}
        self.seconds = dict.fromkeys(self.methods, 0.0)
        self.elapsed = 0.0                         # time spent inside `run` (not between slices)
        self.done = 0                              # (image, method) pairs scored, or skipped
        self._queue = list(self.paths)
        self._pending: list = []                   # (image, class) loaded, awaiting their methods
        self._method = 0                           # the next method of the first pending image

    @property
    def total(self) -> int:
        return max(1, self.wanted * len(self.methods))

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total)

    @property
    def finished(self) -> bool:
        return not self._pending and (not self._queue or len(self.names) >= self.wanted)

    def run(self, seconds: float = math.inf, cancel: Event | None = None,
            progress: Callable[[float], None] | None = None) -> bool:
        """Score pairs for about `seconds` (at least one); whether the run is finished.

        Raises:
            EvaluationError: a class beyond the model's outputs. Cancelled: `cancel` was set.
        """
        from cnnviewer.engine.attribution.faithfulness import evaluate_result
        from cnnviewer.engine.attribution.target import Target
        from cnnviewer.engine.jobs import JobContext

        began = time.perf_counter()
        report = progress or (lambda _fraction: None)

        def inner(fraction: float, _text: str = "") -> None:   # a map's or a curve's own progress, within its pair
            report(min(1.0, (self.done + max(0.0, min(1.0, fraction))) / self.total))

        context = JobContext(cancel=cancel if cancel is not None else Event(), report=inner)
        try:
            while not self.finished:
                context.check()
                if not self._pending:
                    self._load()
                    continue
                image, class_index = self._pending[0]
                method = self.methods[self._method]
                context.progress(0.0, method)
                start = time.perf_counter()
                result = self.workbench.gradient(self.model, image, method, Target(class_index=class_index), context)
                found = evaluate_result(self.workbench, self.model, image, result, metrics=self.metrics,
                                        steps=self.steps, substrate=self.substrate, context=context)
                self.seconds[method] += time.perf_counter() - start
                self.values[method].append({score: _finite(value) for score, value in found.scores.items()})
                self.done += 1
                self._method += 1
                if self._method == len(self.methods):
                    self._pending.pop(0)
                    self._method = 0
                report(self.fraction)
                if time.perf_counter() - began >= seconds:
                    break
        finally:
            self.elapsed += time.perf_counter() - began
        return self.finished

    def _load(self) -> None:
        """Read the next batch of images (unreadable ones skipped) and find their classes in one forward."""
        from cnnviewer.engine.media.images import load_image

        images = []
        while self._queue and len(images) < min(self.batch, self.wanted - len(self.names)):
            path = self._queue.pop(0)
            try:
                images.append((path, load_image(path)))
            except ImageError as error:
                self.skipped.append((_name(Path(path), self.root), str(error)))
                self.done += 0 if self.limited else len(self.methods)
        if images:
            classes = top_classes(self.model, [image for _path, image in images], self.target_class)
            self.names += [_name(Path(path), self.root) for path, _image in images]
            self._pending += [(image, class_index) for (_path, image), class_index in zip(images, classes)]

    def result(self) -> FolderEvaluation:
        """The table of a finished run.

        Raises:
            EvaluationError: no image could be read.
        """
        if not self.finished:
            raise EvaluationError("the evaluation is not finished")
        if not self.names:
            count = len(self.paths)
            raise EvaluationError(f"no readable image among {count} file{'s' * (count != 1)}"
                                  + (f" ({self.skipped[0][1]})" if self.skipped else ""))
        rows = tuple(MethodScores(m, _columns(self.values[m]), self.seconds[m]) for m in self.methods)
        return FolderEvaluation(rows, self.metrics, self.target_class, self.steps, self.substrate,
                                tuple(self.names), tuple(self.skipped), self.elapsed, model=self.model.name)


def evaluate_images(workbench: Workbench, model: LoadedModel, paths: Sequence[Path], *,
                    methods: Sequence[str] = DEFAULT_METHODS, metrics: Sequence[str] = METRICS,
                    target_class: int | None = None, steps: int = DEFAULT_STEPS, substrate: str = "paper",
                    root: Path | None = None, limit: int | None = None, batch: int = BATCH,
                    cancel: Event | None = None, progress: Callable[[float], None] | None = None) -> FolderEvaluation:
    """Score every method on every readable image of `paths`, in one go (a FolderRun run to its end).

    Args:
        paths: image files; one that cannot be read is skipped and listed in `skipped`.
        target_class: the class scored in every image; None: each image's top-1.
        root: the folder that names in the result are relative to.
        limit: stop after this many readable images (None: all).
        batch: images per top-1 forward.
        cancel: set it to stop (Cancelled is raised; nothing is returned or kept).
        progress: called with the fraction done, 0..1.

    Raises:
        EvaluationError: an unknown method or metric, no readable image, a class beyond the outputs.
        Cancelled: `cancel` was set.
    """
    run = FolderRun(workbench, model, paths, methods=methods, metrics=metrics, target_class=target_class,
                    steps=steps, substrate=substrate, root=root, limit=limit, batch=batch)
    run.run(cancel=cancel, progress=progress)
    return run.result()


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _columns(per_image: list[dict[str, float | None]]) -> dict[str, tuple[float | None, ...]]:
    """Per-image score dicts as one column per score (None where an image lacks it)."""
    scores = dict.fromkeys(score for found in per_image for score in found)
    return {score: tuple(found.get(score) for found in per_image) for score in scores}


def top_classes(model: LoadedModel, images: list, target_class: int | None) -> list[int]:
    """Each image's top-1 class (one batched forward), or `target_class` for all, checked against the
    model's outputs."""
    if target_class is not None and target_class < len(model.categories):
        return [target_class] * len(images)     # a named class: no forward needed to check it
    import torch

    from cnnviewer.engine.runtime.inference import prepare_input
    from cnnviewer.engine.runtime.modes import eval_mode
    from cnnviewer.engine.runtime.outputs import first_tensor

    batch = torch.cat([prepare_input(image, model.preprocess, model.device, model.dtype,
                                     model.input_channels).tensor for image in images])
    with torch.inference_mode(), eval_mode(model.module):
        output = first_tensor(model.module(batch))
    if output is None:
        raise EvaluationError(f"{model.name} returns no tensor: nothing to take a class score of")
    logits = output.reshape(output.shape[0], -1)
    if target_class is not None:
        if target_class >= logits.shape[1]:
            raise EvaluationError(f"class {target_class} is beyond {model.name}'s {logits.shape[1]} outputs")
        return [target_class] * len(images)
    return [int(i) for i in logits.float().argmax(dim=1).tolist()]
