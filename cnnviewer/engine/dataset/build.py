"""Building a folder's index: in slices the app interleaves with its other work, resumable after a
cancel or a crash, incremental when files are added, changed or deleted, and sharded under torchrun.

While it runs, the arrays live in `<index>/.building/`. A checkpoint (every few seconds, and on
cancel) flushes them and writes a manifest there that lists only the rows already computed; the
next build of the same folder, model and layers picks that up as if it were an old index, so only
the rest is read. The finished arrays replace the old ones, and the manifest is written last.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from threading import Event

import numpy as np

from cnnviewer.engine.dataset.extract import extract
from cnnviewer.engine.dataset.index import (
    BY_CHANNEL,
    FORMAT_VERSION,
    KINDS,
    MANIFEST,
    DatasetIndex,
    IndexError_,
    array_file,
    default_layers,
    folder_images,
    weights_digest,
)
from cnnviewer.engine.dataset.names import LOGITS, THUMB_SIDE
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.types import LayerId

STAGING, RESUME = ".building", ".resume"
CHECKPOINT_SECONDS = 10.0
RECYCLE_BYTES = 256 << 20   # written pages of memory-mapped arrays count as resident: remap this often


def by_channel(source: Path, target: Path, rows_at_once: int = 4096) -> None:
    """The (N, C) maxima written again as (C, N): one channel's values over every image are then
    contiguous, so a top-k query reads 40 KB at 10,000 images, not the whole layer."""
    values = np.load(source, mmap_mode="r")
    out = np.lib.format.open_memmap(target, mode="w+", dtype=values.dtype, shape=(values.shape[1], values.shape[0]))
    for start in range(0, values.shape[0], rows_at_once):
        out[:, start:start + rows_at_once] = values[start:start + rows_at_once].T
    out.flush()
    del out


def model_key(model: LoadedModel) -> dict:
    """What an index is valid for, besides its folder and layers."""
    preprocess = model.preprocess
    return {"model": model.name, "weights_sha256": weights_digest(model),
            "preprocess": {"resize": preprocess.resize_size, "crop": preprocess.crop_size,
                           "mean": list(preprocess.mean), "std": list(preprocess.std),
                           "interpolation": preprocess.interpolation}}


def _compatible(directory: Path, folder: Path, key: dict, layers: list[LayerId]) -> DatasetIndex | None:
    """The index (complete or a checkpoint) in `directory` when it was made for this folder, model,
    weights, preprocessing and these layers: its rows for unchanged files need not be computed again."""
    if not (directory / MANIFEST).is_file():
        return None
    try:
        old = DatasetIndex(directory)
    except IndexError_:
        return None
    manifest = old.manifest
    same = (manifest.get("format") == FORMAT_VERSION and manifest.get("folder") == str(folder)
            and all(manifest.get(name) == value for name, value in key.items()) and manifest.get("layers") == layers)
    return old if same else None


class IndexBuild:
    """One build of a folder's index. `run()` to the end, or `run(seconds=...)` slice by slice."""

    def __init__(self, folder: str | Path, model: LoadedModel, directory: str | Path, *,
                 layers: Sequence[LayerId] | None = None, batch_size: int = 32, workers: int = 0,
                 mp_context: str | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        self.folder, self.directory = Path(folder).resolve(), Path(directory)
        self.model, self.batch_size, self.workers, self.mp_context = model, batch_size, workers, mp_context
        self.files = folder_images(self.folder)
        if not self.files:
            raise IndexError_(f"{self.folder.name}: no images under this folder")
        self.layers = list(layers) if layers else default_layers(model)
        unknown = [name for name in self.layers if name != LOGITS and name not in model.layer_names]
        if unknown:
            raise IndexError_(f"{model.name} has no layer {unknown[0]!r}")
        self.key = model_key(model)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rank, self.world = shard
        # Rank 0 owns the index folder; another rank (torchrun) computes its shard in a folder of its own.
        self.staging = self.directory / (STAGING if self.rank == 0 else f"{STAGING}-rank{self.rank}")
        self.resume = self.directory / RESUME
        self.started = time.perf_counter()
        if self.rank == 0:
            old = self._previous()
        else:
            shutil.rmtree(self.staging, ignore_errors=True)
            old = (_compatible(self.resume, self.folder, self.key, self.layers)
                   or _compatible(self.directory, self.folder, self.key, self.layers))
        self._plan(old)
        self.arrays: dict[tuple[LayerId, str], np.ndarray] = {}
        self.shapes: dict[LayerId, tuple[int, ...]] = {}
        # Nothing added, changed or deleted since the index in place was made: it is opened as it is.
        self.unchanged = (old is not None and old.directory == self.directory and not self.work
                          and len(self.files) == old.manifest["files"] and len(self.kept) == len(old.rows)
                          and len(self.skipped) == len(old.manifest["skipped"])
                          and all(entry["row"] == row for row, entry in self.kept.items()))
        self._batches = None
        self._last_checkpoint = time.perf_counter()
        self.read = 0              # files read by this build so far (for images/s)
        self._written = 0          # bytes written to the arrays since they were last remapped
        self.finished = not self.work
        if self.unchanged:
            return
        self.staging.mkdir(parents=True, exist_ok=True)
        if old is not None and self.kept and self.rank == 0:
            self._copy_kept(old)
        elif old is not None:
            self.shapes = {name: tuple(shape) for name, shape in old.manifest["shapes"].items()}

    # ---------------------------------------------------------------- planning
    def _previous(self) -> DatasetIndex | None:
        """A checkpoint left by a cancelled or crashed build (preferred: it is newer), else the index."""
        if (self.staging / MANIFEST).is_file():
            shutil.rmtree(self.resume, ignore_errors=True)
            self.staging.replace(self.resume)
        elif self.staging.exists():
            shutil.rmtree(self.staging)      # died before its first checkpoint: nothing to keep
        return (_compatible(self.resume, self.folder, self.key, self.layers)
                or _compatible(self.directory, self.folder, self.key, self.layers))

    def _plan(self, old: DatasetIndex | None) -> None:
        """Which rows are copied (unchanged files), which stay skipped, which must be read."""
        self.kept: dict[int, dict] = {}       # new row -> the old manifest row it copies
        self.skipped: list[dict] = []         # unchanged files that failed before fail again: not read
        if old is not None:
            tables = ({row["path"]: row for row in old.manifest["images"]},
                      {row["path"]: row for row in old.manifest["skipped"]})
            for row, path in enumerate(self.files):
                relative, status = path.relative_to(self.folder).as_posix(), path.stat()
                for table, is_kept in zip(tables, (True, False)):
                    previous = table.get(relative)
                    if previous is not None and previous["bytes"] == status.st_size \
                            and previous["mtime"] == status.st_mtime:
                        if is_kept:
                            self.kept[row] = previous
                        else:
                            self.skipped.append({**previous, "row": row})
        settled = set(self.kept) | {row["row"] for row in self.skipped}
        todo = [row for row in range(len(self.files)) if row not in settled]
        # A shard takes whole batches, every world-th one, so each image is computed in the very batch
        # a single process would put it in: the merged index equals the single-process one exactly.
        batches = [todo[i:i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        self.rows_of_work = [row for batch in batches[self.rank::self.world] for row in batch]
        self.work = [self.files[row] for row in self.rows_of_work]
        self.images = [{**self.kept[row], "row": row} for row in self.kept]
        self.reused = len(self.kept)

    def _allocate(self, name: LayerId, channels: int) -> None:
        for kind, dtype in KINDS.items():
            self.arrays[(name, kind)] = np.lib.format.open_memmap(
                self.staging / array_file(name, kind), mode="w+", dtype=dtype, shape=(len(self.files), channels))

    def _allocate_thumbs(self) -> None:
        self.arrays[("", "thumbs")] = np.lib.format.open_memmap(
            self.staging / "thumbs.npy", mode="w+", dtype=np.uint8, shape=(len(self.files), THUMB_SIDE, THUMB_SIDE, 3))

    def _copy_kept(self, old: DatasetIndex) -> None:
        """The unchanged rows, copied from the old arrays one layer at a time (never all in memory)."""
        self.shapes = {name: tuple(shape) for name, shape in old.manifest["shapes"].items()}
        new_rows = np.fromiter(self.kept, dtype=np.int64)
        old_rows = np.array([self.kept[row]["row"] for row in self.kept], dtype=np.int64)
        for name in old.layers:
            for kind in KINDS:
                source = old.array(name, kind)
                if (name, kind) not in self.arrays:
                    self._allocate(name, source.shape[1])
                self.arrays[(name, kind)][new_rows] = source[old_rows]
        self._allocate_thumbs()
        if (old.directory / "thumbs.npy").is_file():
            self.arrays[("", "thumbs")][new_rows] = np.load(old.directory / "thumbs.npy", mmap_mode="r")[old_rows]

    # ---------------------------------------------------------------- running
    @property
    def total(self) -> int:
        return len(self.files)

    @property
    def done(self) -> int:
        """Files settled so far: copied, skipped or computed."""
        return len(self.images) + len(self.skipped)

    def run(self, seconds: float | None = None, cancel: Event | None = None,
            progress: Callable[[int, int], None] | None = None) -> bool:
        """Compute batches until done (True) or `seconds` have passed (False: call again).

        Raises:
            Cancelled: `cancel` was set; what was computed is checkpointed first.
        """
        if self.finished:
            return True
        if self._batches is None:
            self._batches = extract(self.model, self.work, self.layers, batch_size=self.batch_size,
                                    workers=self.workers, mp_context=self.mp_context)
        deadline = None if seconds is None else time.perf_counter() + seconds
        try:
            for stats, found in self._batches:
                self._store(stats, found)
                if progress is not None:
                    progress(self.done, self.total)
                if time.perf_counter() - self._last_checkpoint > CHECKPOINT_SECONDS:
                    self.checkpoint()
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                if deadline is not None and time.perf_counter() > deadline:
                    return False
        except BaseException:
            self.checkpoint()
            self.close()
            raise
        self.finished = True
        return True

    def _store(self, stats, found: dict) -> None:
        self.shapes.update(found)
        targets = [self.rows_of_work[i] for i in stats.indices]
        for name in stats.maxima:
            if (name, "max") not in self.arrays:
                self._allocate(name, stats.maxima[name].shape[1])
            self.arrays[(name, "max")][targets] = stats.maxima[name]
            self.arrays[(name, "pos")][targets] = stats.positions[name]
            self.arrays[(name, "mean")][targets] = stats.means[name]
        if ("", "thumbs") not in self.arrays:
            self._allocate_thumbs()
        if targets:
            self.arrays[("", "thumbs")][targets] = stats.thumbs
        for row, size in zip(targets, stats.sizes):
            status = self.files[row].stat()
            self.images.append({"row": row, "path": self.files[row].relative_to(self.folder).as_posix(),
                                "bytes": status.st_size, "mtime": status.st_mtime, "size": list(size)})
        for i, reason in stats.skipped:
            status = self.work[i].stat()
            self.skipped.append({"row": self.rows_of_work[i], "path": self.work[i].relative_to(self.folder).as_posix(),
                                 "reason": reason, "bytes": status.st_size, "mtime": status.st_mtime})
        self.read += len(stats.indices) + len(stats.skipped)
        self._written += len(targets) * self._row_bytes()
        if self._written > RECYCLE_BYTES:
            self._recycle()

    def _row_bytes(self) -> int:
        return sum(array.dtype.itemsize * int(np.prod(array.shape[1:])) for array in self.arrays.values())

    def _recycle(self) -> None:
        """Flush and remap every array: the pages written so far leave this process's resident set,
        so indexing 10,000 images into gigabytes of arrays stays within a small, flat RSS."""
        self._flush()
        for key, array in list(self.arrays.items()):
            path = Path(array.filename)
            del array
            self.arrays[key] = np.load(path, mmap_mode="r+")
        self._written = 0

    def close(self) -> None:
        """Stop the decoding workers (a paused build holds them)."""
        if self._batches is not None:
            self._batches.close()
            self._batches = None

    # ---------------------------------------------------------------- writing
    def _manifest(self, complete: bool) -> dict:
        recorded = [name for name in self.layers if name in self.shapes]
        return {
            "format": FORMAT_VERSION, "complete": complete, "folder": str(self.folder), **self.key,
            "weights": self.model.weights_label, "layers": recorded,
            "shapes": {name: list(self.shapes[name]) for name in recorded}, "files": len(self.files),
            "images": sorted(self.images, key=lambda row: row["row"]),
            "skipped": sorted(self.skipped, key=lambda row: row["path"]), "read": self.read, "reused": self.reused,
            "seconds": round(time.perf_counter() - self.started, 3),
        }

    def _flush(self) -> None:
        for array in self.arrays.values():
            array.flush()

    @staticmethod
    def _write_manifest(directory: Path, manifest: dict) -> None:
        temporary = directory / f".{MANIFEST}.{os.getpid()}"
        temporary.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        temporary.replace(directory / MANIFEST)

    def checkpoint(self) -> None:
        """Make what was computed so far survive a cancel or a crash."""
        if not self.arrays or not self.staging.is_dir() or self.world > 1:
            return
        self._flush()
        manifest = self._manifest(complete=False)
        if manifest["layers"] == self.layers:
            self._write_manifest(self.staging, manifest)
        self._last_checkpoint = time.perf_counter()

    def finish(self) -> DatasetIndex:
        """Move the finished arrays into place and write the manifest (last); open the index."""
        if not self.finished:
            raise IndexError_("the index is not finished yet")
        if self.unchanged:
            return DatasetIndex(self.directory)
        self.close()
        self._flush()
        self.arrays.clear()
        manifest = self._manifest(complete=True)
        (self.staging / MANIFEST).unlink(missing_ok=True)
        for name in manifest["layers"]:
            by_channel(self.staging / array_file(name, "max"), self.staging / array_file(name, BY_CHANNEL))
            for kind in (*KINDS, BY_CHANNEL):
                (self.staging / array_file(name, kind)).replace(self.directory / array_file(name, kind))
        if (self.staging / "thumbs.npy").is_file():
            (self.staging / "thumbs.npy").replace(self.directory / "thumbs.npy")
        shutil.rmtree(self.staging, ignore_errors=True)
        self._write_manifest(self.directory, manifest)
        shutil.rmtree(self.resume, ignore_errors=True)
        return DatasetIndex(self.directory)


def build_index(folder: str | Path, model: LoadedModel, directory: str | Path, *,
                layers: Sequence[LayerId] | None = None, batch_size: int = 32, workers: int = 0,
                cancel: Event | None = None, progress: Callable[[int, int], None] | None = None,
                mp_context: str | None = None) -> DatasetIndex:
    """Index every image under `folder` for `model` into `directory` (created), and open it.

    An index already there for the same folder, model, weights, preprocessing and layers is
    updated: only files that are new or whose size or mtime changed are read again; the rows of
    the others are copied, and deleted files drop out. The result equals a fresh index. Under
    torchrun (WORLD_SIZE > 1) the work is sharded across the processes (see sharding.py).
    """
    from cnnviewer.engine.dataset.sharding import distributed_world
    world = distributed_world()
    if world is not None:
        from cnnviewer.engine.dataset.sharding import build_sharded
        return build_sharded(folder, model, directory, world, layers=layers, batch_size=batch_size,
                             workers=workers, progress=progress)
    build = IndexBuild(folder, model, directory, layers=layers, batch_size=batch_size, workers=workers,
                       mp_context=mp_context)
    build.run(cancel=cancel, progress=progress)
    return build.finish()
