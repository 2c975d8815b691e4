"""The lesion study (Veit et al. 2016): delete residual blocks at test time and count how many top-1
decisions survive.

Efficiency: the model is traced once with torch.fx, its residual blocks kept as single nodes. Each
batch of images runs intact once, and the values that later nodes read from outside a block's
downstream part (for a chain of blocks: each block's input) are kept. Deleting block b then runs only
the nodes downstream of b, starting from those kept values: the prefix before b is never recomputed.
A model fx cannot trace runs whole instead, the block's output replaced by a forward hook that lives
only for that pass. Either way the model is left as found: no hook, same modes, same requires_grad.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cnnviewer.engine.errors import Cancelled, ImageError, ModelError
from cnnviewer.engine.experiments.blocks import (
    IDENTITY,
    Block,
    LesionRunner,
    Mutated,
    residual_blocks,
)
from cnnviewer.engine.media.images import InputImage, load_image
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.modes import eval_mode


@dataclass(frozen=True)
class BlockLesion:
    """Deleting one block alone: the share of images whose top-1 stays the intact top-1 (and is right)."""

    block: str
    agreement: float | None        # None: the block cannot be deleted (see its Block.reason)
    accuracy: float | None = None  # None without labels


@dataclass(frozen=True)
class RandomLesion:
    """Deleting `count` random identity-skip blocks at once, `repeats` different draws."""

    count: int
    agreement_mean: float
    agreement_sd: float
    accuracy_mean: float | None = None
    accuracy_sd: float | None = None
    subsets: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class LesionResult:
    """A lesion study of one model over a set of images.

    Attributes:
        blocks: every residual block, execution order (non-deletable ones with their reason).
        per_block: parallel to blocks.
        random: per number of randomly deleted identity-skip blocks, mean and sd over the draws.
        intact_accuracy: top-1 accuracy of the intact model (None without labels).
        images: sources of the images used; skipped: (source, reason) of unreadable ones.
        forwards: image passes run (intact + lesioned); seconds: wall time; reuse: what was reused.
    """

    model: str
    blocks: tuple[Block, ...]
    per_block: tuple[BlockLesion, ...]
    random: tuple[RandomLesion, ...]
    intact_accuracy: float | None
    images: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    forwards: int = 0
    seconds: float = 0.0
    reuse: str = ""
    trained: bool = True
    labelled: bool = field(default=False)

    def to_json(self) -> dict:
        """Plain numbers and strings for json.dumps."""
        return {"model": self.model, "trained": self.trained, "images": len(self.images),
                "image_sources": list(self.images), "skipped": [list(s) for s in self.skipped],
                "intact_accuracy": self.intact_accuracy,
                "blocks": [{**asdict(b), "in_shape": list(b.in_shape), "out_shape": list(b.out_shape),
                            "agreement": lesion.agreement, "accuracy": lesion.accuracy}
                           for b, lesion in zip(self.blocks, self.per_block)],
                "random": [{**asdict(r), "subsets": [list(s) for s in r.subsets]} for r in self.random],
                "forwards": self.forwards, "seconds": round(self.seconds, 3), "reuse": self.reuse}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def lesion_study(model: LoadedModel, images: Sequence[str | Path | InputImage], *,
                 labels: Sequence[int] | None = None, random_counts: Sequence[int] = (1, 2, 3, 4, 5, 6),
                 repeats: int = 5, seed: int = 0, batch: int = 16, cancel: threading.Event | None = None,
                 progress: Callable[[float], None] | None = None) -> LesionResult:
    """Delete each deletable block alone, then random sets of identity-skip blocks, over `images`.

    Args:
        model: the network; left exactly as found.
        images: files (unreadable ones are skipped with their one-line reason) or InputImages.
        labels: the right class of each image (parallel to `images`): accuracy besides agreement.
        random_counts: numbers of blocks deleted at once (those above the identity-skip blocks' count are dropped).
        repeats: random draws per count (the same draws for every image).

    Raises:
        Cancelled: `cancel` was set. ValueError: labels do not match the images.
        ImageError: no image is readable. ModelError: the model has no block to delete.
    """
    start = time.perf_counter()
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    module = model.module
    size = model.preprocess.crop_size
    with eval_mode(module), torch.no_grad():
        example = torch.zeros(1, model.input_channels, size, size, device=model.device, dtype=model.dtype)
        blocks = residual_blocks(module, example)
        if not any(b.deletable for b in blocks):
            raise ModelError(f"{model.title}: no residual block with a skip connection to delete")
        runner = LesionRunner(module, blocks)
        singles = [b.name for b in blocks if b.deletable]
        pool = [b.name for b in blocks if b.skip == IDENTITY]
        rng = np.random.default_rng(seed)
        counts = [k for k in dict.fromkeys(random_counts) if 1 <= k <= len(pool)]
        draws = {k: [tuple(pool[i] for i in sorted(rng.choice(len(pool), k, replace=False))) for _ in range(repeats)]
                 for k in counts}
        runs = [(name,) for name in singles] + [subset for k in counts for subset in draws[k]]
        agree = np.zeros(len(runs))
        right = np.zeros(len(runs))
        intact_right = 0
        used: list[str] = []
        skipped: list[tuple[str, str]] = []
        forwards = 0
        total = max(1, len(images)) * (1 + len(runs))
        for first in range(0, len(images), batch):
            pictures, wanted = [], []
            for index in range(first, min(first + batch, len(images))):
                try:
                    item = images[index]
                    picture = item if isinstance(item, InputImage) else load_image(item)
                except ImageError as error:
                    skipped.append((str(images[index]), str(error)))
                    continue
                pictures.append(picture)
                wanted.append(labels[index] if labels is not None else -1)
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if not pictures:
                continue
            inputs = torch.cat([_prepare(model, p) for p in pictures])
            truth = torch.tensor(wanted)
            while True:
                try:
                    found = _batch(runner, inputs, runs, cancel, progress,
                                   partial(_fraction, first * (1 + len(runs)), len(pictures), total))
                    break
                except Mutated:
                    continue
            top, lesioned = found
            used.extend(p.source for p in pictures)
            forwards += len(pictures) * (1 + len(runs))
            intact_right += int((top == truth).sum())
            for number, guesses in enumerate(lesioned):
                agree[number] += int((guesses == top).sum())
                right[number] += int((guesses == truth).sum())
    if not used:
        raise ImageError("no readable image" + (f" (first: {skipped[0][1]})" if skipped else ""))
    n = len(used)
    labelled = labels is not None
    per_single = {name: (agree[i] / n, right[i] / n) for i, name in enumerate(singles)}
    per_block = tuple(BlockLesion(b.name, per_single[b.name][0] if b.deletable else None,
                                  per_single[b.name][1] if b.deletable and labelled else None) for b in blocks)
    random, at = [], len(singles)
    for k in counts:
        agreements = list(agree[at:at + repeats] / n)
        accuracies = list(right[at:at + repeats] / n)
        at += repeats
        mean, sd = _mean_sd(agreements)
        accuracy = _mean_sd(accuracies) if labelled else (None, None)
        random.append(RandomLesion(k, mean, sd, *accuracy, subsets=tuple(draws[k])))
    if progress is not None:
        progress(1.0)
    return LesionResult(model.title, tuple(blocks), per_block, tuple(random),
                        intact_right / n if labelled else None, tuple(used), tuple(skipped), forwards,
                        time.perf_counter() - start, runner.reuse, model.trained, labelled)


def _fraction(before: int, size: int, total: int, done: int) -> float:
    return (before + done * size) / total


def _prepare(model: LoadedModel, picture: InputImage) -> Tensor:
    from cnnviewer.engine.runtime.inference import prepare_input
    return prepare_input(picture, model.preprocess, model.device, model.dtype, model.input_channels).tensor


def _batch(runner: LesionRunner, inputs: Tensor, runs: list[tuple[str, ...]], cancel, progress, fraction):
    """Top-1 of the intact model and of every lesion, for one batch."""
    logits, kept = runner.intact(inputs)
    top = logits.float().argmax(1).cpu()
    lesioned = []
    for number, deleted in enumerate(runs):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if progress is not None:
            progress(fraction(number + 1))
        lesioned.append(runner.lesioned(kept, deleted, inputs).float().argmax(1).cpu())
    return top, lesioned


def folder_images(folder: str | Path) -> list[Path]:
    """The image files directly inside `folder`, then those in its subfolders (one level), by name."""
    from cnnviewer.engine.media.kinds import image_files
    folder = Path(folder)
    found = image_files(folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found.extend(image_files(sub))
    return found


def _normal(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def folder_labels(folder: str | Path, model: LoadedModel, images: Sequence[Path] | None = None) -> list[int] | None:
    """Each image's class from its subfolder's name, or from a labels.csv ('file,class' lines: a class
    index or name) in `folder`; None unless every image gets one (then only agreement is measured).

    Subfolder names match the model's category names case-insensitively ('_' for ' '), or ImageNet
    synsets ('n01440764') for a 1000-class model when timm's ImageNetInfo is at hand.
    """
    folder = Path(folder)
    images = folder_images(folder) if images is None else list(images)
    if not images:
        return None
    index = {_normal(name): i for i, name in enumerate(model.categories)}
    for i, name in enumerate(model.categories):   # 'tench, Tinca tinca': its first name too
        index.setdefault(_normal(name.split(",")[0]), i)
    if len(model.categories) == 1000:
        try:
            from timm.data import ImageNetInfo
            for i, synset in enumerate(ImageNetInfo().label_names()):
                index.setdefault(synset.lower(), i)
        except ImportError:
            pass
    table: dict[str, int] = {}
    listed = folder / "labels.csv"
    if listed.is_file():
        for line in listed.read_text(encoding="utf-8", errors="replace").splitlines():
            file, _, value = line.rpartition(",")
            value = value.strip()
            if value.isdigit() and int(value) < max(len(model.categories), 1):
                table[file.strip()] = int(value)
            elif _normal(value) in index:
                table[file.strip()] = index[_normal(value)]
    found = []
    for path in images:
        relative = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name
        if relative in table or path.name in table:
            found.append(table.get(relative, table.get(path.name)))
        elif path.parent != folder and _normal(path.parent.name) in index:
            found.append(index[_normal(path.parent.name)])
        else:
            return None
    return found


__all__ = ["Block", "BlockLesion", "LesionResult", "LesionRunner", "RandomLesion", "folder_images",
           "folder_labels", "lesion_study"]
