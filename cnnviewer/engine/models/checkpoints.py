"""A training run's folder of checkpoints, in training order, fitted one architecture at a time.

Training frameworks name their checkpoints in a handful of ways (Lightning's
`epoch=3-step=1200.ckpt`, `epoch_003.pth`, `ckpt_e12.pt`, `step1000.pt`, Hugging Face's
`checkpoint-1500/` folders, detectron2's `model_0004999.pth`); the order comes from the name,
else from the checkpoint's own `epoch` / `step` keys (read with `weights_only=True` and `mmap`,
so listing 50 files reads their pickled dicts, not 50 x 14 MB of tensors), else the
modification time. A checkpoint is read and fitted once; the last few fitted models are kept,
so stepping back and forth between neighbours costs nothing after the first visit.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from threading import Event

import torch

from cnnviewer.engine.errors import Cancelled, WeightsError, describe
from cnnviewer.engine.models.checkpoint_names import (
    CHECKPOINT_DIR,
    CHECKPOINT_SUFFIXES,
    ORDER_KEYS,
    is_temporary,
    order_label,
    order_from_name,
    safetensors_header,
    safetensors_order,
)
from cnnviewer.engine.models.fitting import fit_state_dict
from cnnviewer.engine.models.handle import LoadedModel, wrap_module
from cnnviewer.engine.models.loading import load_weights, non_finite, prefix_variants
from cnnviewer.engine.models.weight_files import read_weights

@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a run: where it is and where it falls in training.

    Attributes:
        path: the weights file (inside a `checkpoint-1500/` folder for Hugging Face's).
        epoch, step: from the name, else from the file's keys; None where neither says.
        label: 'epoch 3 · step 1200', or the name when nothing gives the order.
        mtime, size: the file's stamp when it was listed (Follow compares them).
    """

    path: str
    epoch: int | None
    step: int | None
    label: str
    mtime: float
    size: int

    @property
    def name(self) -> str:
        """The name shown: the file, or its Hugging Face folder."""
        path = Path(self.path)
        return f"{path.parent.name}/{path.name}" if CHECKPOINT_DIR.search(path.parent.name) else path.name


def weights_in(entry: Path) -> Path | None:
    """The weights file an entry of the folder stands for: itself, or the one weights file a
    subfolder holds (Hugging Face's `checkpoint-1500/model.safetensors`); None otherwise."""
    if is_temporary(entry.name):
        return None
    if entry.is_file():
        return entry if entry.suffix.lower() in CHECKPOINT_SUFFIXES else None
    if entry.is_dir():
        try:
            found = [p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES
                     and not is_temporary(p.name) and not p.name.startswith(("optimizer", "scheduler", "rng_state",
                                                                             "training_args", "scaler"))]
        except OSError:
            return None
        return found[0] if len(found) == 1 else None
    return None


def order_from_file(path: Path) -> tuple[int | None, int | None]:
    """(epoch, step) from a checkpoint dict's `epoch` / `step` / `global_step` / `iteration` keys.

    Read with `weights_only=True` and, for zip files, `mmap=True`: the tensors are mapped, not read.
    Anything unreadable gives (None, None): listing never fails on one bad file.
    """
    if path.suffix.lower() == ".safetensors":
        return safetensors_order(path)
    try:
        mmap = zipfile.is_zipfile(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception:   # a corrupt or foreign file: its order is unknown, loading it will say why
        return None, None
    if not isinstance(obj, dict):
        return None, None
    found: dict[str, int] = {}
    for key, field in ORDER_KEYS.items():
        value = obj.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and field not in found:
            found[field] = int(value)
    return found.get("epoch"), found.get("step")


def describe_entry(entry: Path, weights: Path) -> Checkpoint:
    """A Checkpoint for one folder entry (a file, or a Hugging Face folder and its weights file)."""
    stat = weights.stat()
    epoch, step, named = order_from_name(entry.name)
    if epoch is None and step is None or not named and entry.is_file():
        from_file = order_from_file(weights)
        if from_file != (None, None):
            epoch, step, named = *from_file, True
    fallback = entry.name if entry.is_file() else f"{entry.name}/{weights.name}"
    return Checkpoint(str(weights), epoch, step, order_label(epoch, step, named, fallback), stat.st_mtime, stat.st_size)


def _sort_key(checkpoint: Checkpoint) -> tuple:
    """Epoch then step where known (known ones first), else modification time; ties by name."""
    if checkpoint.epoch is None and checkpoint.step is None:
        return (1, 0, 0, checkpoint.mtime, checkpoint.path)
    return (0, -1 if checkpoint.epoch is None else checkpoint.epoch,
            -1 if checkpoint.step is None else checkpoint.step, 0.0, checkpoint.path)


def list_checkpoints(folder: str | Path) -> list[Checkpoint]:
    """The weights files of a training run's folder, in training order.

    Raises:
        WeightsError: not a folder, or unreadable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: not a folder" + ("" if folder.exists() else " (no such folder)"))
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise WeightsError(f"{folder.name}: cannot list ({error.strerror or error})") from None
    found = []
    for entry in entries:
        weights = weights_in(entry)
        if weights is None:
            continue
        try:
            found.append(describe_entry(entry, weights))
        except OSError:   # removed while listing
            continue
    return sorted(found, key=_sort_key)


def new_entries(folder: str | Path, known: set[str]) -> list[tuple[Path, Path]]:
    """(entry, weights file) for each checkpoint of the folder not in `known` (paths), cheaply: no
    file is opened, so Follow can poll a folder of fifty checkpoints every second.

    Raises:
        WeightsError: the folder cannot be listed (deleted, unmounted).
    """
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError as error:   # deleted, unmounted: Follow says so and stops, never polls on silently
        raise WeightsError(f"{Path(folder).name}: the folder is gone or unreadable "
                           f"({error.strerror or error.__class__.__name__})") from None
    found = []
    for entry in entries:
        weights = weights_in(entry)
        if weights is not None and str(weights) not in known:
            found.append((entry, weights))
    return found


def readable(path: str | Path) -> bool:
    """Whether a file reads as a whole weights file now: a zip with its central directory (a
    partial `torch.save` has none), a safetensors file as long as its header says, else a pickle
    that loads. False means "not yet" for a file being written, and never raises."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            length, header = safetensors_header(path)
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            return path.stat().st_size >= 8 + length + max(ends, default=0)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith("data.pkl") for name in archive.namelist())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:   # partial, corrupt or gone: "not yet"
        return False


def whole_model(path: str | Path) -> bool:
    """A TorchScript archive (its zip holds `constants.pkl` and code): not weights to fit. Never raises."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


Stamp = tuple[int, int]   # (size, mtime_ns)


def complete(path: str | Path, previous: Stamp | None) -> tuple[bool, Stamp | None]:
    """Whether a new file is ready to load, for Follow: its size and mtime are the ones the
    previous poll saw (the writer paused or finished), and it reads as a whole file.

    Returns:
        (ready, this poll's stamp: pass it as `previous` next time; None when the file is gone).
    """
    try:
        stat = Path(path).stat()
    except OSError:
        return False, None
    stamp = (stat.st_size, stat.st_mtime_ns)
    return (stamp == previous and stat.st_size > 0 and readable(path)), stamp


class CheckpointSeries:
    """The checkpoints of one run fitted into one architecture, the last few kept.

    The first checkpoint decides the architecture (through `load_weights`: the current model's
    first, else the one its keys fit); every later one is a copy of that module with the file's
    tensors copied in (every key and shape checked), so reading and fitting is one `torch.load`
    and one `load_state_dict`, and the layer structure stays identical. Used from the job thread.
    """

    def __init__(self, folder: str | Path, checkpoints: list[Checkpoint], base: LoadedModel | None = None,
                 *, cache_size: int = 4, device: str | None = None) -> None:
        self.folder = Path(folder)
        self.checkpoints = list(checkpoints)
        self._base, self._device = base, device
        self._first: LoadedModel | None = None
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._cache_size = max(cache_size, 2)   # the one shown and the one being read
        self._spare: torch.nn.Module | None = None   # an evicted checkpoint's module, to be filled again
        self.reads = 0   # files read and fitted (tests and the benchmark count them)

    def __len__(self) -> int:
        return len(self.checkpoints)

    def add(self, checkpoint: Checkpoint) -> int:
        """Put a new checkpoint in its place in training order; returns its index."""
        self.checkpoints.append(checkpoint)
        self.checkpoints.sort(key=_sort_key)
        return self.checkpoints.index(checkpoint)

    def replace(self, checkpoint: Checkpoint) -> int:
        """A checkpoint file written again (Lightning's `last.ckpt` is, every epoch): the new listing
        of that path takes the old one's place, and its fitted model is forgotten; returns its index."""
        self.checkpoints = [c for c in self.checkpoints if c.path != checkpoint.path]
        self._cache.pop(checkpoint.path, None)
        if self._first is not None and self._first.weights_path == checkpoint.path:   # stays the template
            self._first = dataclasses.replace(self._first, weights_path=None)
        return self.add(checkpoint)

    def rewritten(self) -> list[tuple[Checkpoint, Path, Path]]:
        """(listed checkpoint, folder entry, weights file) for each file whose size or mtime is no longer
        the listed one; a file that is gone is left listed (loading it will say so)."""
        found = []
        for checkpoint in self.checkpoints:
            path = Path(checkpoint.path)
            try:
                stat = path.stat()
            except OSError:
                continue
            if (stat.st_size, stat.st_mtime) != (checkpoint.size, checkpoint.mtime):
                found.append((checkpoint, path if path.parent == self.folder else path.parent, path))
        return found

    def vanished(self, keep: str | None = None) -> list[str]:
        """Drop the checkpoints whose file is gone (Lightning's `save_top_k` deletes old ones), except
        `keep` (the one on screen: it stays shown and listed until the strip leaves it); their paths."""
        gone = [c.path for c in self.checkpoints if c.path != keep and not Path(c.path).is_file()]
        if gone:
            self.checkpoints = [c for c in self.checkpoints if c.path not in gone]
            for path in gone:
                self._cache.pop(path, None)   # a deleted file's model is never shown again: not a spare either
        return gone

    def model(self, index: int, keep: bool = True, *, shown: str | None = None,
              cancel: Event | None = None) -> LoadedModel:
        """Checkpoint `index` as a model of the series' architecture (cached unless `keep` is False:
        a pass over every checkpoint, as the drift plot makes, then leaves the slider's neighbours).

        A checkpoint that falls out of the cache hands its module to the next one read: the file's
        tensors are copied into it in place, so torch.fx's recorder of that module (traced and
        checked once: 2-3 forward passes' worth) serves every checkpoint after it, and no module
        is deep-copied. The LoadedModel around it is new (a new token), so no cache mixes the two.
        `shown` is the path of the checkpoint every panel shows now: its module is never handed
        over (a superseded slider job would otherwise refill the model on screen with another
        epoch's weights while the label still names the old one).

        Raises:
            WeightsError: unreadable, or does not fit (one line naming the file).
            Cancelled: `cancel` was set before the file was read (a superseded slider move).
        """
        checkpoint = self.checkpoints[index]
        found = self._cache.get(checkpoint.path)
        if found is not None:
            self._cache.move_to_end(checkpoint.path)
            return found
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if not keep:
            return self._fit(checkpoint, None)
        while len(self._cache) >= self._cache_size:
            path = next((p for p in self._cache if p != shown), None)
            if path is None:
                break
            evicted = self._cache.pop(path)
            if evicted is not self._first and path != shown:   # the first one is the template: never overwritten
                self._spare = evicted.module
        spare, self._spare = self._spare, None
        model = self._fit(checkpoint, spare)
        self._cache[checkpoint.path] = model
        return model

    def architecture(self) -> LoadedModel:
        """The model the first readable checkpoint was fitted into (the series' architecture)."""
        if self._first is None:
            errors = []
            for checkpoint in self.checkpoints:
                try:
                    self._first = self._load_first(checkpoint)
                    break
                except WeightsError as error:
                    errors.append(str(error))
            if self._first is None:
                raise WeightsError(errors[0] if errors else f"{self.folder.name}: no checkpoints")
        return self._first

    def _load_first(self, checkpoint: Checkpoint) -> LoadedModel:
        """Only weights decide the architecture: a whole model (TorchScript) cannot take the other
        checkpoints' tensors, so it would make every one of them fail to fit."""
        if whole_model(checkpoint.path):
            raise WeightsError(f"{checkpoint.name} holds a whole model (TorchScript), not a state dict")
        model = load_weights(checkpoint.path, self._base, device=self._device)
        self.reads += 1
        return dataclasses.replace(model, weights_label=f"{checkpoint.label}: {checkpoint.name}")

    def _fit(self, checkpoint: Checkpoint, spare: torch.nn.Module | None) -> LoadedModel:
        """Read a checkpoint and fit it into `spare` (in place) or a copy of the first's module."""
        first = self.architecture()
        if first.weights_path == checkpoint.path:
            self._spare = spare
            return first
        label = f"{checkpoint.label}: {checkpoint.name}"
        try:
            loaded = read_weights(checkpoint.path)
        except WeightsError as error:
            self._spare = spare
            raise error from None   # it names the file and why
        self.reads += 1
        if loaded.kind != "state_dict" or not loaded.state_dict:
            raise WeightsError(f"{checkpoint.name} holds a whole model ({loaded.kind}), not weights for "
                               f"{first.name}")
        broken = non_finite(loaded.state_dict)
        if broken:
            label += f" — warning: NaN or inf in {', '.join(broken[:2])}"
        attempts = []
        module = spare if spare is not None else copy.deepcopy(first.module)
        for state_dict in prefix_variants(loaded.state_dict):
            try:   # every key and shape is checked before anything is copied: a failure leaves it intact
                fit_state_dict(module, state_dict, source=checkpoint.name, model_name=first.name)
            except WeightsError as error:
                attempts.append(describe(error))
                continue
            return wrap_module(module, first.name, base=first, weights_label=label, trained=True,
                               weights_path=checkpoint.path, device=self._device)
        self._spare = spare      # not used: the next read may fill it
        raise WeightsError(attempts[0])
