"""Building a folder's index: in slices the app interleaves with its other work, resumable after a
cancel or a crash, incremental when files are added, changed or deleted.

While it runs, the arrays live in `<index>/.building/` (their disk space reserved when they are
made: a full disk is an error, not a SIGBUS). A checkpoint (every few seconds, and on cancel)
flushes them and writes a manifest there that lists only the rows already computed; the next build
of the same folder, model and layers picks that up as if it were an old index, so only the rest is
read. The finished build becomes a new generation of the index in one atomic switch (store.py).
One build at a time per index folder (lock.py); a damaged index or checkpoint is rebuilt, with a
warning, never used. A file that changes while it is read is left for the next build.
"""

from __future__ import annotations

import errno
import os
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from threading import Event

import numpy as np

from cnnviewer.engine.dataset import store
from cnnviewer.engine.dataset.extract import BatchStats, Status, extract, file_status
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
)
from cnnviewer.engine.dataset.lock import IndexLock
from cnnviewer.engine.dataset.names import LOGITS, THUMB_SIDE
from cnnviewer.engine.dataset.reuse import compatible as _compatible
from cnnviewer.engine.dataset.reuse import model_key
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.types import LayerId

STAGING, RESUME = ".building", ".resume"
CHECKPOINT_SECONDS = 10.0
RECYCLE_BYTES = 256 << 20   # written pages of memory-mapped arrays count as resident: remap this often
_HOLDERS: dict[str, weakref.ref] = {}    # index folder -> this process's build holding its lock


class IndexBuild:
    """One build of a folder's index. `run()` to the end, or `run(seconds=...)` slice by slice."""

    def __init__(self, folder: str | Path, model: LoadedModel, directory: str | Path, *,
                 layers: Sequence[LayerId] | None = None, batch_size: int = 32, workers: int = 0,
                 mp_context: str | None = None, shard: tuple[int, int] = (0, 1),
                 waiting: Callable[[str], None] | None = None, cancel: Event | None = None) -> None:
        self.folder, self.directory = Path(folder).resolve(), Path(directory)
        self.model, self.batch_size, self.workers, self.mp_context = model, batch_size, workers, mp_context
        self.files = folder_images(self.folder)
        if not self.files:
            raise IndexError_(f"{self.folder.name}: no images under this folder")
        self.layers = list(dict.fromkeys(layers)) if layers else default_layers(model)   # each once
        unknown = [name for name in self.layers if name != LOGITS and name not in model.layer_names]
        if unknown:
            raise IndexError_(f"{model.name} has no layer {unknown[0]!r}")
        self.key = model_key(model)
        store.writable_folder(self.directory, IndexError_)
        self.rank, self.world = shard
        # Rank 0 owns the index folder; another rank (torchrun) computes its shard in a folder of its own.
        self.staging = self.directory / (STAGING if self.rank == 0 else f"{STAGING}-rank{self.rank}")
        self.resume = self.directory / RESUME
        self.lock = IndexLock(self.directory)
        self.writable = self._lock(waiting, cancel) if self.rank == 0 else True
        self.started = time.perf_counter()
        try:
            if self.rank == 0:
                old = self._previous()
            else:
                store.remove(self.staging)
                old = (_compatible(self.resume, self.folder, self.key, self.layers)
                       or _compatible(self.directory, self.folder, self.key, self.layers))
            self._plan(old)
            self.arrays: dict[tuple[LayerId, str], np.ndarray] = {}
            self.shapes: dict[LayerId, tuple[int, ...]] = {}
            # Nothing added, changed or deleted since the index in use was made: it is opened as it is.
            self.unchanged = (old is not None and old.directory == store.current_generation(self.directory)
                              and not self.work and len(self.files) == old.manifest["files"]
                              and len(self.kept) == len(old.rows) and len(self.skipped) == len(old.manifest["skipped"])
                              and all(entry["row"] == row for row, entry in self.kept.items()))
            self._batches = None
            self._last_checkpoint = time.perf_counter()
            self.read = 0              # files read by this build so far (for images/s)
            self._written = 0          # bytes written to the arrays since they were last remapped
            self.finished = not self.work
            if self.unchanged:
                return
            if not self.writable:
                raise IndexError_(f"{self.directory}: cannot be written (read-only), so the index of "
                                  f"{self.folder.name}/ cannot be brought up to date")
            try:
                self.staging.mkdir(parents=True, exist_ok=True)
                if old is not None and self.kept and self.rank == 0:
                    self._copy_kept(old)
                elif old is not None:
                    self.shapes = {name: tuple(shape) for name, shape in old.manifest["shapes"].items()}
            except OSError as error:
                raise self._disk_error(error) from None
        except BaseException:
            self.lock.release()
            raise

    # ---------------------------------------------------------------- the folder's lock
    def _lock(self, waiting: Callable[[str], None] | None, cancel: Event | None) -> bool:
        """Take the index folder's lock. A build of this process still holding it (the app started
        another for the same folder) gives it up first: the newest wins, as with the app's jobs.
        Another process's build is waited for (`waiting` hears of it; `cancel` ends the wait)."""
        key = str(self.directory.resolve())
        older = _HOLDERS.get(key)
        older = older() if older is not None else None
        if older is not None and older.lock.held:
            older.close()
            older.lock.release()
        try:
            taken = self.lock.acquire(waiting, cancel)
        except OSError as error:
            raise IndexError_(f"{self.directory}: cannot be locked ({error.strerror or error})") from None
        _HOLDERS[key] = weakref.ref(self)
        return taken

    def _owns(self) -> bool:
        """Whether this build may still write: it holds the lock (rank 0), or is another rank's."""
        return self.rank != 0 or self.lock.held

    # ---------------------------------------------------------------- planning
    def _previous(self) -> DatasetIndex | None:
        """A checkpoint left by a cancelled or crashed build (preferred: it is newer), else the index."""
        if self.writable:
            if self.staging.is_dir() and (self.staging / MANIFEST).is_file():
                store.remove(self.resume)
                self.staging.replace(self.resume)
            else:
                store.remove(self.staging)      # died before its first checkpoint (or not a folder)
            if os.path.lexists(self.resume) and not self.resume.is_dir():
                store.remove(self.resume)
            store.tidy(self.directory)
        resumed = _compatible(self.resume, self.folder, self.key, self.layers,
                              damaged="the checkpoint is left out" if self.resume.exists() else None)
        if resumed is None and self.writable and self.resume.exists():
            store.remove(self.resume)
        return resumed or _compatible(self.directory, self.folder, self.key, self.layers, damaged="rebuilding it")

    def _plan(self, old: DatasetIndex | None) -> None:
        """Which rows are copied (unchanged files), which stay skipped, which must be read."""
        self.kept: dict[int, dict] = {}       # new row -> the old manifest row it copies
        self.skipped: list[dict] = []         # unchanged files that failed before fail again: not read
        if old is not None:
            tables = ({row["path"]: row for row in old.manifest["images"]},
                      {row["path"]: row for row in old.manifest["skipped"]})
            for row, path in enumerate(self.files):
                try:
                    relative, status = path.relative_to(self.folder).as_posix(), path.stat()
                except OSError:               # gone since the folder was listed: read (and left out)
                    continue
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
            self.arrays[(name, kind)] = store.allocate(self.staging / array_file(name, kind), dtype,
                                                       (len(self.files), channels))

    def _allocate_thumbs(self) -> None:
        self.arrays[("", "thumbs")] = store.allocate(self.staging / "thumbs.npy", np.uint8,
                                                     (len(self.files), THUMB_SIDE, THUMB_SIDE, 3))

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
            IndexError_: the disk is full or cannot be written, the folder vanished, or a newer build
                of the same index took over.
        """
        if self.finished:
            return True
        if not self._owns():
            raise IndexError_(f"{self.directory}: this build was closed, or a newer one took over; start another")
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
        except OSError as error:
            self.close()
            raise self._disk_error(error) from None
        except BaseException:
            try:
                self.checkpoint()
            except OSError:
                pass                    # already failing: the checkpoint was a bonus
            self.close()
            raise
        if not self.folder.is_dir():
            self.close()
            self._discard()
            raise IndexError_(f"{self.folder}: the folder was moved or deleted while it was indexed")
        self.finished = True
        return True

    def _unchanged_since(self, path: Path, before: Status | None) -> dict | None:
        """The file's size and mtime as the worker saw them before decoding, when the file is still
        the same now; None when it changed or vanished meanwhile (it is left for the next build)."""
        if before is None or file_status(path) != before:
            return None
        return {"bytes": before[1], "mtime": before[3]}

    def _store(self, stats: BatchStats, found: dict) -> None:
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
        for i, size in zip(stats.indices, stats.sizes):
            status = self._unchanged_since(self.work[i], stats.status.get(i))
            if status is not None:
                self.images.append({"row": self.rows_of_work[i], "path": self._relative(i), **status,
                                    "size": list(size)})
        for i, reason in stats.skipped:
            status = self._unchanged_since(self.work[i], stats.status.get(i))
            if status is not None:
                self.skipped.append({"row": self.rows_of_work[i], "path": self._relative(i), "reason": reason,
                                     **status})
        self.read += len(stats.indices) + len(stats.skipped)
        self._written += len(targets) * self._row_bytes()
        if self._written > RECYCLE_BYTES:
            self._recycle()

    def _relative(self, i: int) -> str:
        return self.work[i].relative_to(self.folder).as_posix()

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
        """Stop the decoding workers (a paused build holds them). An unfinished build also gives up the
        folder's lock: a paused one (the app's Pause, a cancel) never blocks another process; it is
        not run again (the next build resumes from its checkpoint)."""
        if self._batches is not None:
            self._batches.close()
            self._batches = None
        if not self.finished:
            self.lock.release()

    def _discard(self) -> None:
        """Drop the staging arrays (a full disk is given back) and the lock."""
        self.arrays.clear()
        store.remove(self.staging)
        self.lock.release()

    def _disk_error(self, error: OSError) -> IndexError_:
        """A write that failed, as one line; on a full disk the staging arrays are removed."""
        if error.errno == errno.ENOSPC:
            self._discard()
            return IndexError_(f"{self.directory}: no space left on the disk for the index")
        self.lock.release()
        return IndexError_(f"{self.directory}: cannot write the index ({error.strerror or error})")

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

    def checkpoint(self) -> None:
        """Make what was computed so far survive a cancel or a crash."""
        if not self.arrays or not self.staging.is_dir() or self.world > 1 or not self._owns():
            return
        self._flush()
        manifest = self._manifest(complete=False)
        if manifest["layers"] == self.layers:
            store.write_manifest(self.staging, manifest)
        self._last_checkpoint = time.perf_counter()

    def finish(self) -> DatasetIndex:
        """Make the finished arrays the index in use, in one atomic switch (store.publish); open it."""
        if not self.finished:
            raise IndexError_("the index is not finished yet")
        try:
            if self.unchanged:
                return DatasetIndex(self.directory)
            if not self._owns():
                raise IndexError_(f"{self.directory}: a newer build of this index took over")
            for name in self.layers:   # every file unreadable now: the known layers hold no image
                if name in self.shapes and not (self.staging / array_file(name, "max")).exists():
                    self._allocate(name, self.shapes[name][0])
            self.close()
            self._flush()
            self.arrays.clear()
            manifest = self._manifest(complete=True)
            try:
                (self.staging / MANIFEST).unlink(missing_ok=True)
                for name in manifest["layers"]:
                    store.by_channel(self.staging / array_file(name, "max"),
                                     self.staging / array_file(name, BY_CHANNEL))
                store.crash_point("by-channel written")
                store.write_manifest(self.staging, manifest)
                store.crash_point("manifest written")
                store.publish(self.directory, self.staging)
                store.tidy(self.directory)
                store.remove(self.resume)
                store.crash_point("checkpoint removed")
            except OSError as error:
                raise self._disk_error(error) from None
            return DatasetIndex(self.directory)
        finally:
            self.lock.release()
