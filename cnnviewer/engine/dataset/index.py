"""A folder's activation index on disk, and the queries the Dataset panel and synthesis ask of it.

Layout (a folder anyone can open with numpy and json; never a pickle). The index folder holds
`current`, a symlink to the generation in use (`gen-<n>/`, switched atomically by a build: store.py),
and `.lock` (lock.py); the generation holds:

    manifest.json            model, weights, preprocessing, layers and their output shapes,
                             images (path relative to the folder, size, mtime, original size),
                             skipped files with the reason
    <layer>.max.npy          (N, C) float32  maximum activation of each channel in each image
    <layer>.pos.npy          (N, C) int32    where that maximum is: y * w + x in the layer's map
    <layer>.mean.npy         (N, C) float32  the channel's mean (= global-average-pooled feature)
    <layer>.max_by_channel.npy  (C, N) float32  <layer>.max transposed: one channel's row is contiguous
    thumbs.npy               (N, 64, 64, 3) uint8  what the model saw (its centre crop), small

Row i is the i-th image file in name order; rows of skipped files are zero and never returned.
Arrays are read with memory mapping, so a query loads only the layer it asks about.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnviewer.engine.dataset.manifest import ManifestError, validate
from cnnviewer.engine.dataset.names import LOGITS, MANIFEST, THUMB_SIDE
from cnnviewer.engine.dataset.store import current_generation
from cnnviewer.engine.errors import CnnViewerError
from cnnviewer.engine.media.images import IMAGE_SUFFIXES
from cnnviewer.engine.types import LayerId

if TYPE_CHECKING:   # torch-free at run time: the GUI thread reads indexes (thumbnails, paths)
    from cnnviewer.engine.models.handle import LoadedModel

FORMAT_VERSION = 2
KINDS = {"max": np.float32, "pos": np.int32, "mean": np.float32}
BY_CHANNEL = "max_by_channel"     # written when a build finishes, from "max"


class IndexError_(CnnViewerError):
    """A folder or an index that cannot be used (one line)."""


class DamagedIndexError(IndexError_):
    """An index is there but damaged (its manifest or an array): a build replaces it."""


def folder_images(folder: str | Path) -> list[Path]:
    """Every image file under `folder`, recursively, in name order (hidden folders skipped)."""
    root = Path(folder)
    if not root.is_dir():
        raise IndexError_(f"{root}: not a folder")
    try:
        found = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])]
    except OSError as error:     # a subfolder removed or renamed while it is listed
        raise IndexError_(f"{root}: cannot be listed ({error.strerror or error}); try again") from None
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


# Identities in eval mode and global pools: their statistics repeat the layer before them.
REDUNDANT_TYPES = frozenset({"Dropout", "Dropout1d", "Dropout2d", "AlphaDropout", "Identity", "Flatten",
                             "AdaptiveAvgPool1d", "AdaptiveAvgPool2d"})


def default_layers(model: LoadedModel) -> list[LayerId]:
    """What the Feature maps tree shows at its top level: the blocks of the model's top-level
    containers (e.g. features.0 ... features.18), the other top-level modules, and the logits.
    Layers whose statistics would repeat another's are left out: dropout, flatten and global
    pooling (the block before them holds the same means), and the final Linear (the logits)."""
    candidates: list[tuple[LayerId, str]] = []
    for name, module in model.module.named_children():
        children = list(module.named_children())
        if children and type(module).__name__ in ("Sequential", "ModuleList"):
            candidates += [(f"{name}.{child}", type(sub).__name__) for child, sub in children]
        elif any(True for _ in module.parameters()):
            candidates.append((name, type(module).__name__))
    layers = [(name, kind) for name, kind in candidates if kind not in REDUNDANT_TYPES]
    leaves = [name for name, module in model.module.named_modules() if not any(True for _ in module.children())]
    if layers and leaves and layers[-1] == (leaves[-1], "Linear"):
        layers.pop()
    return [name for name, _ in layers] + [LOGITS]


def array_file(layer: LayerId, kind: str) -> str:
    """The file name of one of a layer's arrays."""
    return f"{(layer or 'root').replace('/', '_')}.{kind}.npy"


def weights_digest(model: LoadedModel) -> str:
    """sha256 of the weights file when there is one, else of the parameters themselves."""
    digest = hashlib.sha256()
    if model.weights_path and Path(model.weights_path).is_file():
        with open(model.weights_path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    for name, tensor in sorted(model.module.state_dict().items()):
        digest.update(name.encode())
        # The array itself, not a bytes copy: hashlib reads the buffer without holding the GIL.
        digest.update(np.ascontiguousarray(tensor.detach().float().cpu().numpy()))
    return digest.hexdigest()


@dataclass(frozen=True)
class Hit:
    """One row of a top-k answer."""

    path: Path
    value: float
    position: tuple[int, int]     # (y, x) in the layer's map; (0, 0) for vectors
    original_size: tuple[int, int] = (0, 0)   # (width, height) of the image file
    row: int = -1                 # the image's row in the index


@dataclass(frozen=True)
class Neighbour:
    """One row of a nearest-neighbours answer."""

    path: Path
    similarity: float             # cosine of the pooled features
    row: int


class DatasetIndex:
    """An index on disk: its manifest in memory, its arrays memory-mapped on demand."""

    def __init__(self, directory: str | Path) -> None:
        """Open the index in use under `directory` (or the checkpoint or generation `directory` is).

        Raises:
            IndexError_: there is no index; DamagedIndexError: there is one, but it is damaged.
        """
        self.root = Path(directory)
        found = current_generation(self.root)
        if found is None:
            raise IndexError_(f"{self.root}: no index here")
        self.directory = found
        try:
            self.manifest = validate(json.loads((self.directory / MANIFEST).read_text(encoding="utf-8")))
        except (OSError, ValueError, RecursionError) as error:
            detail = str(error) if isinstance(error, ManifestError) else error.__class__.__name__
            raise DamagedIndexError(f"{self.root}: damaged index ({detail})") from None
        self.folder = Path(self.manifest["folder"])
        self.rows = {row["row"]: row for row in self.manifest["images"]}
        self.valid_rows = np.array(sorted(self.rows), dtype=np.int64)     # rows holding an image
        self._valid = np.zeros(self.manifest["files"], dtype=bool)
        self._valid[self.valid_rows] = True
        self._bank: tuple[LayerId, np.ndarray] | None = None              # one layer's normalised features
        # Every array mapped once, on opening: the mappings stay readable after another process's
        # update has switched generations and removed this one (an unlinked file lives while mapped).
        self._maps: dict[str, np.ndarray] = {}
        self._check_arrays()

    def _check_arrays(self) -> None:
        """Every array the manifest promises is there, readable, of its dtype and row count: a truncated,
        emptied or swapped .npy is found on opening (reading its header only), not in a query."""
        files = self.manifest["files"]
        expected = [(array_file(layer, kind), dtype, (files, self.channels(layer)), True)
                    for layer in self.layers for kind, dtype in KINDS.items()]
        expected += [(array_file(layer, BY_CHANNEL), np.float32, (self.channels(layer), files), False)
                     for layer in self.layers]
        expected.append(("thumbs.npy", np.uint8, (files, THUMB_SIDE, THUMB_SIDE, 3), False))
        for name, dtype, shape, required in expected:
            path = self.directory / name
            if not required and not path.is_file():
                continue
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError, EOFError) as error:
                raise DamagedIndexError(f"{self.root}: damaged index ({name}: {error.__class__.__name__})") from None
            if array.dtype != dtype or array.shape != shape:
                raise DamagedIndexError(f"{self.root}: damaged index ({name} is {array.dtype} {array.shape}, "
                                        f"not {np.dtype(dtype)} {shape})")
            self._maps[name] = array

    def _mapped(self, name: str) -> np.ndarray | None:
        """The array file `name` as mapped on opening; None when this index has none."""
        return self._maps.get(name)

    @property
    def layers(self) -> list[LayerId]:
        return list(self.manifest["layers"])

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path relative to the folder, reason) of every file that could not be read."""
        return [(row["path"], row["reason"]) for row in self.manifest["skipped"]]

    def path(self, row: int) -> Path:
        return self.folder / self.rows[int(row)]["path"]

    def row_of(self, path: str | Path) -> int | None:
        """The row of an image file of this folder, if indexed."""
        try:
            relative = Path(path).resolve().relative_to(self.folder).as_posix()
        except ValueError:
            return None
        return next((row for row, entry in self.rows.items() if entry["path"] == relative), None)

    def array(self, layer: LayerId, kind: str) -> np.ndarray:
        """(N, C) array `kind` ('max', 'pos' or 'mean') of `layer`, memory-mapped."""
        if layer not in self.manifest["layers"]:
            raise IndexError_(f"{layer!r} is not indexed; indexed layers: {', '.join(self.layers[:6])}…")
        return self._maps[array_file(layer, kind)]

    def channels(self, layer: LayerId) -> int:
        return int(self.manifest["shapes"][layer][0])

    def map_width(self, layer: LayerId) -> int:
        shape = self.manifest["shapes"][layer]
        return int(shape[-1]) if len(shape) == 3 else 1

    def _channel_maxima(self, layer: LayerId, channel: int) -> np.ndarray:
        """(N,) the channel's maximum in every row: one contiguous read from the by-channel copy."""
        if layer not in self.manifest["layers"]:
            raise IndexError_(f"{layer!r} is not indexed; indexed layers: {', '.join(self.layers[:6])}…")
        maxima = self._mapped(array_file(layer, BY_CHANNEL))
        maxima = self.array(layer, "max").T if maxima is None else maxima
        if not 0 <= channel < maxima.shape[0]:
            raise IndexError_(f"{layer} has {maxima.shape[0]} channels; {channel} is out of range")
        return np.asarray(maxima[channel], dtype=np.float32)

    def values(self, layer: LayerId, channel: int) -> np.ndarray:
        """The channel's maximum in every indexed image (valid rows, in order): its histogram's data."""
        return self._channel_maxima(layer, channel)[self.valid_rows]

    def top(self, layer: LayerId, channel: int, k: int = 9) -> list[Hit]:
        """The k images where `channel` of `layer` fires most (one entry per image), best first."""
        maxima = self._channel_maxima(layer, channel)
        values = np.where(self._valid[:len(maxima)], maxima, -np.inf)
        count = min(k, len(self.valid_rows))
        best = np.argpartition(-values, count - 1)[:count] if count else np.array([], dtype=int)
        best = best[np.lexsort((best, -values[best]))]        # by value, ties by file order
        positions = self.array(layer, "pos")
        width = self.map_width(layer)
        return [Hit(self.path(i), float(values[i]), divmod(int(positions[i, channel]), width),
                    tuple(self.rows[int(i)]["size"]), int(i)) for i in best]

    def features(self, layer: LayerId, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, C) float32 pooled features of `layer` for `rows` (default: every indexed image)."""
        means = self.array(layer, "mean")
        return np.asarray(means[self.valid_rows if rows is None else np.asarray(rows)], dtype=np.float32)

    def _normalised(self, layer: LayerId) -> np.ndarray:
        if self._bank is None or self._bank[0] != layer:
            bank = self.features(layer)
            bank /= np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
            self._bank = (layer, bank)
        return self._bank[1]

    def nearest(self, features: np.ndarray, layer: LayerId, k: int = 9) -> list[Neighbour]:
        """The k images whose pooled `layer` features are most cosine-similar to `features` (exact:
        one matrix product over normalised features; the layer's bank is kept for the next query)."""
        bank = self._normalised(layer)
        query = np.asarray(features, dtype=np.float32).ravel()
        if query.shape[0] != bank.shape[1]:
            raise IndexError_(f"{layer} has {bank.shape[1]} channels; the query has {query.shape[0]}")
        similarity = bank @ (query / max(float(np.linalg.norm(query)), 1e-12))
        count = min(k, len(similarity))
        best = np.argpartition(-similarity, count - 1)[:count] if count else np.array([], dtype=int)
        best = best[np.lexsort((best, -similarity[best]))]
        return [Neighbour(self.path(self.valid_rows[i]), float(similarity[i]), int(self.valid_rows[i])) for i in best]

    def neighbours(self, features: np.ndarray, layer: LayerId, k: int = 9) -> list[tuple[Path, float]]:
        """`nearest` as (path, similarity) pairs."""
        return [(hit.path, hit.similarity) for hit in self.nearest(features, layer, k)]

    def thumbnails(self, rows: np.ndarray) -> np.ndarray:
        """(n, 64, 64, 3) uint8: what the model saw of each of `rows` (zeros in an older index)."""
        thumbs = self._mapped("thumbs.npy")
        if thumbs is None:
            return np.zeros((len(rows), 64, 64, 3), np.uint8)
        return np.asarray(thumbs[np.asarray(rows, dtype=np.int64)])

    def predicted(self, rows: np.ndarray | None = None) -> np.ndarray | None:
        """The model's top-1 class of each image (valid rows by default); None without logits."""
        if LOGITS not in self.layers:
            return None
        logits = self.array(LOGITS, "max")
        return np.asarray(np.argmax(logits[self.valid_rows if rows is None else np.asarray(rows)], axis=1))


def recorded_layers(directory: str | Path) -> list[LayerId] | None:
    """The layers the index under `directory` was made with, when its manifest is readable, even if an
    array is damaged: a rebuild then keeps the user's layers. None when there is nothing to go by."""
    found = current_generation(Path(directory))
    if found is None:
        return None
    try:
        return list(validate(json.loads((found / MANIFEST).read_text(encoding="utf-8")))["layers"])
    except (OSError, ValueError, RecursionError):
        return None


def default_directory(folder: str | Path, model: LoadedModel) -> Path:
    """Where the index of `folder` for `model` lives by default: the user's cache, one folder per
    (folder, model, weights), so indexes of several models of one folder coexist."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnviewer" / "index"
    key = f"{Path(folder).resolve()}|{model.name}|{weights_digest(model)}"
    return root / hashlib.sha256(key.encode()).hexdigest()[:20]


def retrieval_layer(index: DatasetIndex) -> LayerId:
    """The default layer for neighbours and maps: the penultimate layer, i.e. the last indexed layer
    whose output is not the logits themselves (the classifier's Linear is skipped, its input kept)."""
    layers = [name for name in index.layers if name != LOGITS]
    if not layers:
        raise IndexError_("this index holds only the logits; index a layer for neighbours")
    shapes = index.manifest["shapes"]
    logits = shapes.get(LOGITS)
    before = [name for name in layers if logits is None or shapes[name] != logits]
    return (before or layers)[-1]
