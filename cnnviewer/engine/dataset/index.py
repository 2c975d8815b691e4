"""A folder's activation index on disk, and the queries the Dataset panel and synthesis ask of it.

Layout (a folder anyone can open with numpy and json; never a pickle):

    manifest.json            model, weights, preprocessing, layers and their output shapes,
                             images (path relative to the folder, size, mtime, original size),
                             skipped files with the reason
    <layer>.max.npy          (N, C) float32  maximum activation of each channel in each image
    <layer>.pos.npy          (N, C) int32    where that maximum is: y * w + x in the layer's map
    <layer>.mean.npy         (N, C) float32  the channel's mean (= global-average-pooled feature)

Row i is the i-th image file in name order; rows of skipped files are zero and never returned.
Arrays are read with memory mapping, so a query loads only the layer it asks about.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from threading import Event

import numpy as np

from cnnviewer.engine.dataset.extract import LOGITS, extract
from cnnviewer.engine.errors import CnnViewerError
from cnnviewer.engine.media.images import IMAGE_SUFFIXES
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.types import LayerId

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class IndexError_(CnnViewerError):
    """A folder or an index that cannot be used (one line)."""


def folder_images(folder: str | Path) -> list[Path]:
    """Every image file under `folder`, recursively, in name order (hidden folders skipped)."""
    root = Path(folder)
    if not root.is_dir():
        raise IndexError_(f"{root}: not a folder")
    found = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def default_layers(model: LoadedModel) -> list[LayerId]:
    """What the Feature maps tree shows at its top level: the blocks of the model's top-level
    containers (e.g. features.0 ... features.18), the other top-level modules, and the logits."""
    layers: list[LayerId] = []
    for name, module in model.module.named_children():
        children = [child for child, _ in module.named_children()]
        if children and type(module).__name__ in ("Sequential", "ModuleList"):
            layers += [f"{name}.{child}" for child in children]
        elif any(True for _ in module.parameters()):
            layers.append(name)
    return layers + [LOGITS]


def _file_name(layer: LayerId) -> str:
    return (layer or "root").replace("/", "_")


def _weights_digest(model: LoadedModel) -> str:
    """sha256 of the weights file when there is one, else of the parameters themselves."""
    digest = hashlib.sha256()
    if model.weights_path and Path(model.weights_path).is_file():
        with open(model.weights_path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    for name, tensor in sorted(model.module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Hit:
    """One row of a top-k answer."""

    path: Path
    value: float
    position: tuple[int, int]     # (y, x) in the layer's map; (0, 0) for vectors
    original_size: tuple[int, int] = (0, 0)   # (width, height) of the image file


class DatasetIndex:
    """An index on disk: its manifest in memory, its arrays memory-mapped on demand."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise IndexError_(f"{self.directory}: no readable index ({error.__class__.__name__})") from None
        self.folder = Path(self.manifest["folder"])
        self.rows = {row["row"]: row for row in self.manifest["images"]}

    @property
    def layers(self) -> list[LayerId]:
        return list(self.manifest["layers"])

    def array(self, layer: LayerId, kind: str) -> np.ndarray:
        """(N, C) array `kind` ('max', 'pos' or 'mean') of `layer`, memory-mapped."""
        if layer not in self.manifest["layers"]:
            raise IndexError_(f"{layer!r} is not indexed; indexed layers: {', '.join(self.layers[:6])}…")
        return np.load(self.directory / f"{_file_name(layer)}.{kind}.npy", mmap_mode="r")

    def top(self, layer: LayerId, channel: int, k: int = 9) -> list[Hit]:
        """The k images where `channel` of `layer` fires most (one entry per image), best first."""
        maxima = self.array(layer, "max")
        if not 0 <= channel < maxima.shape[1]:
            raise IndexError_(f"{layer} has {maxima.shape[1]} channels; {channel} is out of range")
        values = np.asarray(maxima[:, channel], dtype=np.float32)
        valid = np.zeros(len(values), dtype=bool)
        valid[list(self.rows)] = True
        values = np.where(valid, values, -np.inf)
        count = min(k, int(valid.sum()))
        best = np.argpartition(-values, count - 1)[:count] if count else np.array([], dtype=int)
        best = best[np.lexsort((best, -values[best]))]        # by value, ties by file order
        positions = self.array(layer, "pos")
        width = self.manifest["shapes"][layer][-1] if len(self.manifest["shapes"][layer]) == 3 else 1
        return [Hit(self.folder / self.rows[int(i)]["path"], float(values[i]),
                    divmod(int(positions[i, channel]), width), tuple(self.rows[int(i)]["size"])) for i in best]

    def neighbours(self, features: np.ndarray, layer: LayerId, k: int = 9) -> list[tuple[Path, float]]:
        """The k images whose pooled `layer` features are most cosine-similar to `features`."""
        means = np.asarray(self.array(layer, "mean"), dtype=np.float32)
        rows = np.array(sorted(self.rows))
        bank = means[rows]
        bank = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        query = np.asarray(features, dtype=np.float32).ravel()
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        similarity = bank @ query
        order = np.argsort(-similarity, kind="stable")[:k]
        return [(self.folder / self.rows[int(rows[i])]["path"], float(similarity[i])) for i in order]


def _reusable(directory: Path, folder: Path, model_key: dict, layers: list[LayerId]) -> DatasetIndex | None:
    """The index already in `directory`, when it was made for this folder, model, weights,
    preprocessing and these layers (then its unchanged rows need not be computed again)."""
    if not (directory / MANIFEST).is_file():
        return None
    try:
        old = DatasetIndex(directory)
    except IndexError_:
        return None
    manifest = old.manifest
    same = (manifest.get("format") == FORMAT_VERSION and manifest.get("folder") == str(folder)
            and all(manifest.get(key) == value for key, value in model_key.items())
            and manifest.get("layers") == layers)
    return old if same else None


def build_index(folder: str | Path, model: LoadedModel, directory: str | Path, *,
                layers: Sequence[LayerId] | None = None, batch_size: int = 32, workers: int = 0,
                cancel: Event | None = None, progress: Callable[[int, int], None] | None = None) -> DatasetIndex:
    """Index every image under `folder` for `model` into `directory` (created), and open it.

    An index already there for the same folder, model, weights, preprocessing and layers is
    updated: only files that are new or whose size or mtime changed are read again; the rows of
    the others are copied, and deleted files drop out. The result equals a fresh index.
    """
    folder, directory = Path(folder).resolve(), Path(directory)
    files = folder_images(folder)
    if not files:
        raise IndexError_(f"{folder.name}: no images under this folder")
    layers = list(layers) if layers else default_layers(model)
    unknown = [name for name in layers if name != LOGITS and name not in model.layer_names]
    if unknown:
        raise IndexError_(f"{model.name} has no layer {unknown[0]!r}")
    directory.mkdir(parents=True, exist_ok=True)
    model_key = {"model": model.name, "weights_sha256": _weights_digest(model),
                 "preprocess": {"resize": model.preprocess.resize_size, "crop": model.preprocess.crop_size,
                                "mean": list(model.preprocess.mean), "std": list(model.preprocess.std),
                                "interpolation": model.preprocess.interpolation}}
    old = _reusable(directory, folder, model_key, layers)
    kept: dict[int, dict] = {}      # new row -> the old manifest row it copies
    skipped: list[dict] = []        # unchanged files that failed before fail again: not read
    if old is not None:
        by_path = {row["path"]: row for row in old.manifest["images"]}
        bad = {row["path"]: row for row in old.manifest["skipped"]}
        for row, path in enumerate(files):
            relative, status = path.relative_to(folder).as_posix(), path.stat()
            for table, target in ((by_path, "kept"), (bad, "skipped")):
                previous = table.get(relative)
                if previous is not None and previous["bytes"] == status.st_size \
                        and previous["mtime"] == status.st_mtime:
                    if target == "kept":
                        kept[row] = previous
                    else:
                        skipped.append({**previous, "row": row})
    started = time.perf_counter()
    settled = set(kept) | {row["row"] for row in skipped}
    work = [path for row, path in enumerate(files) if row not in settled]
    rows_of_work = [row for row in range(len(files)) if row not in settled]
    staging = directory / ".building"
    staging.mkdir(exist_ok=True)
    arrays: dict[tuple[LayerId, str], np.ndarray] = {}

    def allocate(name: LayerId, channels: int) -> None:
        for kind, dtype in (("max", np.float32), ("pos", np.int32), ("mean", np.float32)):
            arrays[(name, kind)] = np.lib.format.open_memmap(staging / f"{_file_name(name)}.{kind}.npy", mode="w+",
                                                             dtype=dtype, shape=(len(files), channels))

    shapes: dict[LayerId, tuple[int, ...]] = {}
    if kept:   # copy the unchanged rows from the old arrays, one layer at a time
        shapes = {name: tuple(shape) for name, shape in old.manifest["shapes"].items()}
        for name in old.layers:
            for kind in ("max", "pos", "mean"):
                source = old.array(name, kind)
                if (name, kind) not in arrays:
                    allocate(name, source.shape[1])
                new_rows = np.fromiter(kept, dtype=np.int64)
                arrays[(name, kind)][new_rows] = source[[kept[r]["row"] for r in kept]]
    images = [{**kept[row], "row": row} for row in kept]
    if work:
        for stats, found in extract(model, work, layers, batch_size=batch_size, workers=workers, cancel=cancel,
                                    progress=progress):
            shapes.update(found)
            targets = [rows_of_work[i] for i in stats.indices]
            for name in stats.maxima:
                if (name, "max") not in arrays:
                    allocate(name, stats.maxima[name].shape[1])
                arrays[(name, "max")][targets] = stats.maxima[name]
                arrays[(name, "pos")][targets] = stats.positions[name]
                arrays[(name, "mean")][targets] = stats.means[name]
            for row, size in zip(targets, stats.sizes):
                status = files[row].stat()
                images.append({"row": row, "path": files[row].relative_to(folder).as_posix(),
                               "bytes": status.st_size, "mtime": status.st_mtime, "size": list(size)})
            for i, reason in stats.skipped:
                status = work[i].stat()
                skipped.append({"row": rows_of_work[i], "path": work[i].relative_to(folder).as_posix(),
                                "reason": reason, "bytes": status.st_size, "mtime": status.st_mtime})
    for array in arrays.values():
        array.flush()
    arrays.clear()
    recorded = [name for name in layers if name in shapes]
    for name in recorded:   # the new arrays replace the old ones only now
        for kind in ("max", "pos", "mean"):
            (staging / f"{_file_name(name)}.{kind}.npy").replace(directory / f"{_file_name(name)}.{kind}.npy")
    staging.rmdir()
    manifest = {
        "format": FORMAT_VERSION, "folder": str(folder), **model_key, "weights": model.weights_label,
        "layers": recorded, "shapes": {name: list(shapes[name]) for name in recorded},
        "files": len(files), "images": sorted(images, key=lambda row: row["row"]),
        "skipped": sorted(skipped, key=lambda row: row["path"]), "read": len(work), "reused": len(kept),
        "seconds": round(time.perf_counter() - started, 3),
    }
    temporary = directory / f".{MANIFEST}.{os.getpid()}"
    temporary.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    temporary.replace(directory / MANIFEST)   # the manifest appears last: a half-written index has none
    return DatasetIndex(directory)


def default_directory(folder: str | Path, model: LoadedModel) -> Path:
    """Where the index of `folder` for `model` lives by default: the user's cache, one folder per
    (folder, model, weights), so indexes of several models of one folder coexist."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnviewer" / "index"
    key = f"{Path(folder).resolve()}|{model.name}|{_weights_digest(model)}"
    return root / hashlib.sha256(key.encode()).hexdigest()[:20]


def retrieval_layer(index: DatasetIndex) -> LayerId:
    """The default layer for neighbours and maps: the last indexed layer before the logits."""
    layers = [name for name in index.layers if name != LOGITS]
    if not layers:
        raise IndexError_("this index holds only the logits; index a layer for neighbours")
    return layers[-1]
