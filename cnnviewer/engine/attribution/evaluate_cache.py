"""A folder's evaluation (evaluate.py) over its index, kept beside the index: a second click shows the table at once.

One JSON file, `evaluation.json`, in the index's generation folder (where the Dataset map's cache
lives too: a rebuilt index is a new generation, so an old table never outlives its images). It
holds up to MAX_ENTRIES evaluations, each under the sha256 of its identity: the model and its
weights' digest, the preprocessing, methods, metrics, target, steps, substrate, and the index's
content (every row's path, size and mtime).

The file is input like any other (a crash, a disk, a hand edit): it is read once, with its size and
mtime compared before and after; every field is checked for its type and range and against the
index; anything wrong makes that entry (or the whole file) be ignored, computed again and written
over. Writes go through a temporary file, fsync and one rename (media/files.atomic_output): a crash
leaves the old file or the new one, never half of one. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, Any

from cnnviewer.engine.attribution.evaluate import (
    DEFAULT_METHODS,
    DEFAULT_STEPS,
    METRICS,
    EvaluationError,
    FolderEvaluation,
    FolderRun,
    MethodScores,
    check_request,
)
from cnnviewer.engine.attribution.target import METHODS
from cnnviewer.engine.errors import Cancelled, CnnViewerError
from cnnviewer.engine.media.files import atomic_output

if TYPE_CHECKING:
    from cnnviewer.engine.dataset.index import DatasetIndex
    from cnnviewer.engine.models.handle import LoadedModel
    from cnnviewer.engine.workbench import Workbench

FORMAT = 1
NAME = "evaluation.json"
MAX_ENTRIES = 32
MAX_BYTES = 64 << 20          # a forged file is not read into memory whole beyond this
MAX_TEXT = 4096


class CacheError(ValueError):
    """What is wrong with a cache file or entry (one line)."""


def crash_point(step: str) -> None:
    """Called at each step of a write. Does nothing: tests replace it to inject a crash there."""


def path_of(index: DatasetIndex) -> Path:
    return index.directory / NAME


def fingerprint(index: DatasetIndex) -> str:
    """The index's content: every row's file, size and mtime (as the Dataset map's cache takes it)."""
    text = "|".join(f"{row['row']}:{row['path']}:{row['bytes']}:{row['mtime']}" for row in index.manifest["images"])
    text += "|skipped|" + "|".join(f"{row['row']}:{row['path']}" for row in index.manifest["skipped"])
    return hashlib.sha256(f"{index.folder}|{text}".encode("utf-8", "surrogateescape")).hexdigest()


def identity(model: LoadedModel, index: DatasetIndex, methods: tuple[str, ...], metrics: tuple[str, ...],
             target: int | None, steps: int, substrate: str) -> dict:
    """Everything an evaluation's numbers depend on, as plain JSON values."""
    from cnnviewer.engine.dataset.index import weights_digest

    p = model.preprocess
    return {"model": model.name, "weights": weights_digest(model), "dtype": model.dtype_name,
            "preprocess": [p.resize_size, p.crop_size, list(p.mean), list(p.std), p.interpolation],
            "methods": list(methods), "metrics": list(metrics), "target": target, "steps": steps,
            "substrate": substrate, "index": fingerprint(index)}


def key_of(found: dict) -> str:
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()


def _read(path: Path) -> Any:
    """The file's JSON, read once; None when absent. A file that changed while it was read is read again."""
    for _attempt in range(3):
        try:
            before = os.stat(path)
        except FileNotFoundError:
            return None
        if before.st_size > MAX_BYTES:
            raise CacheError(f"{before.st_size:,} bytes")
        with open(path, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)
        after = os.stat(path)
        if (before.st_size, before.st_mtime_ns, before.st_ino) == (after.st_size, after.st_mtime_ns, after.st_ino):
            return json.loads(data.decode("utf-8", "surrogateescape"))
    raise CacheError("it kept changing while it was read")


def _entries(path: Path) -> dict[str, Any]:
    """The file's entries (unchecked), {} when there is none; a damaged file says so once and counts as empty."""
    try:
        data = _read(path)
    except (OSError, ValueError, RecursionError, CacheError) as error:
        warnings.warn(f"{path.name}: damaged evaluation cache ({error.__class__.__name__}); evaluating again",
                      stacklevel=3)
        return {}
    if data is None:
        return {}
    if not (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("entries"), dict)):
        warnings.warn(f"{path.name}: not an evaluation cache of this version; evaluating again", stacklevel=3)
        return {}
    return data["entries"]


def lookup(index: DatasetIndex, wanted: dict) -> FolderEvaluation | None:
    """The evaluation kept for `wanted` (an `identity`), checked field by field; None when there is none
    or it is damaged (then it is computed again and written over)."""
    entry = _entries(path_of(index)).get(key_of(wanted))
    if entry is None:
        return None
    try:
        return parse(entry, wanted, index)
    except (CacheError, TypeError, ValueError, KeyError) as error:
        warnings.warn(f"{NAME}: ignoring a damaged cached evaluation ({error}); evaluating again", stacklevel=2)
        return None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise CacheError(f"{what} is not a text")
    return value


def _number(value: Any, what: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise CacheError(f"{what} is {value!r}, not a finite number in range")
    return float(value)


def _list(value: Any, what: str, length: int | None = None) -> list:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise CacheError(f"{what} is not a list" + (f" of {length}" if length is not None else ""))
    return value


def parse(entry: Any, wanted: dict, index: DatasetIndex) -> FolderEvaluation:
    """A cache entry as a FolderEvaluation, once every field is checked: its identity is `wanted`,
    its images and skipped files are exactly the index's, and each score is a finite number (or null)
    per image.

    Raises:
        CacheError: the first thing found wrong.
    """
    if not isinstance(entry, dict) or entry.get("identity") != wanted:
        raise CacheError("its identity does not match")
    result = entry.get("result")
    if not isinstance(result, dict):
        raise CacheError("no result")
    images = tuple(_text(name, "an image") for name in _list(result.get("images"), "images"))
    skipped = tuple((_text(_list(pair, "a skipped file", 2)[0], "a skipped file"),
                     _text(pair[1], "a reason")) for pair in _list(result.get("skipped"), "skipped"))
    indexed = {index.rows[int(row)]["path"] for row in index.valid_rows}
    names = [*images, *(name for name, _ in skipped)]
    if not images or len(set(names)) != len(names) or set(names) != indexed:
        raise CacheError("its images are not the index's")
    methods = []
    for row, method in zip(_list(result.get("methods"), "methods", len(wanted["methods"])), wanted["methods"]):
        if not isinstance(row, dict) or row.get("method") != method or method not in METHODS:
            raise CacheError(f"a row is not {method}")
        values = row.get("values")
        if not isinstance(values, dict) or len(values) > 64:
            raise CacheError(f"{method}: no values")
        columns = {}
        for score, column in values.items():
            _text(score, "a score name")
            columns[score] = tuple(None if v is None else _number(v, f"{method} {score}", -1e6, 1e6)
                                   for v in _list(column, f"{method} {score}", len(images)))
        methods.append(MethodScores(method, columns, _number(row.get("seconds"), f"{method} seconds", 0, 1e9)))
    target = wanted["target"]
    return FolderEvaluation(tuple(methods), tuple(wanted["metrics"]), target, wanted["steps"], wanted["substrate"],
                            images, skipped, _number(result.get("seconds"), "seconds", 0, 1e9), cached=True,
                            model=wanted["model"])


def _serialise(result: FolderEvaluation) -> dict:
    return {"images": list(result.images), "skipped": [list(pair) for pair in result.skipped],
            "seconds": result.seconds,
            "methods": [{"method": row.method, "seconds": row.seconds,
                         "values": {score: list(column) for score, column in row.values.items()}}
                        for row in result.methods]}


def _tidy(path: Path, age: float = 600.0) -> None:
    """Remove the temporaries a killed writer left (atomic_output's `.evaluation-*.json`), once they are
    old enough that no writer can still be using them."""
    now = time.time()
    for left in path.parent.glob(f".{path.stem}-*{path.suffix}"):
        try:
            if now - left.stat().st_mtime > age:
                left.unlink()
        except OSError:
            continue


def store(index: DatasetIndex, wanted: dict, result: FolderEvaluation) -> None:
    """Keep `result` under `wanted` beside the index (the other entries kept, the oldest dropped beyond
    MAX_ENTRIES). A folder that cannot be written costs the cache only, with a warning."""
    path = path_of(index)
    entries = {key: entry for key, entry in _entries(path).items()
               if isinstance(key, str) and isinstance(entry, dict) and key != key_of(wanted)}
    entries[key_of(wanted)] = {"identity": wanted, "result": _serialise(result)}
    entries = dict(list(entries.items())[-MAX_ENTRIES:])
    text = json.dumps({"format": FORMAT, "entries": entries}, indent=1)
    _tidy(path)
    try:
        with atomic_output(path) as temporary:
            with open(temporary, "w", encoding="utf-8", errors="surrogateescape") as stream:
                crash_point("opened")
                stream.write(text)
                crash_point("written")
                stream.flush()
                os.fsync(stream.fileno())
            crash_point("synced")
    except CnnViewerError as error:
        warnings.warn(f"the evaluation is not cached: {error}", stacklevel=3)


def start_index(workbench: Workbench, model: LoadedModel, index: DatasetIndex, *,
                methods: Sequence[str] = DEFAULT_METHODS, metrics: Sequence[str] = METRICS,
                target_class: int | None = None, steps: int = DEFAULT_STEPS, substrate: str = "paper",
                use_cache: bool = True) -> FolderEvaluation | FolderRun:
    """The table kept beside the index for this very evaluation (model, weights, methods, metrics, target,
    steps, the index's files), or a FolderRun over the index's images to run (in slices) and `finish`."""
    methods, metrics = check_request(methods, metrics, steps)
    if not len(index.valid_rows):
        raise EvaluationError(f"{index.folder}: the index holds no readable image")
    wanted = identity(model, index, methods, metrics, target_class, steps, substrate)
    if use_cache:
        found = lookup(index, wanted)
        if found is not None:
            return found
    run = FolderRun(workbench, model, [index.path(row) for row in index.valid_rows], methods=methods,
                    metrics=metrics, target_class=target_class, steps=steps, substrate=substrate, root=index.folder)
    run.identity = wanted
    return run


def finish(index: DatasetIndex, run: FolderRun) -> FolderEvaluation:
    """The finished run's table, kept beside the index (only a whole table is ever written)."""
    result = run.result()
    if run.identity is not None:
        store(index, run.identity, result)
    return result


def evaluate_index(workbench: Workbench, model: LoadedModel, index: DatasetIndex, *,
                   methods: Sequence[str] = DEFAULT_METHODS, metrics: Sequence[str] = METRICS,
                   target_class: int | None = None, steps: int = DEFAULT_STEPS, substrate: str = "paper",
                   use_cache: bool = True, cancel: Event | None = None,
                   progress: Callable[[float], None] | None = None) -> FolderEvaluation:
    """`start_index`, run to its end and `finish`ed: the cached table, or a new one, then kept.
    A Cancel (Cancelled raised) keeps nothing: the cache only ever holds whole tables."""
    found = start_index(workbench, model, index, methods=methods, metrics=metrics, target_class=target_class,
                        steps=steps, substrate=substrate, use_cache=use_cache)
    if isinstance(found, FolderEvaluation):
        return found
    found.run(cancel=cancel, progress=progress)
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    return finish(index, found)
