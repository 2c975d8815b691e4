"""The dataset map: a 2-D embedding of every image's pooled features at one layer.

L2-normalised features (cosine geometry, as the neighbours use), PCA to 50 dimensions, then t-SNE
(openTSNE: on this 2-core CPU 5,000 images take 12.6 s on one thread and 7.6 s on two, 1.2x faster
than scikit-learn's Barnes-Hut at the same 750 iterations, within 10 % either way at 1,000, see
benchmarks/bench_dataset.py; its callbacks report progress and stop it on request), or UMAP when
umap-learn is installed. Colours: the model's predicted
class (when the logits are indexed) or k-means clusters of the PCA features. A finished map is kept
beside the index (`<layer>.map-<method>.npz`, plain arrays) and reused while the images are the same.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from threading import Event

import numpy as np

from cnnviewer.engine.dataset.index import DatasetIndex, IndexError_, array_file
from cnnviewer.engine.errors import Cancelled, CnnViewerError
from cnnviewer.engine.media.files import atomic_output
from cnnviewer.engine.types import LayerId

PCA_DIMENSIONS = 50
TSNE_ITERATIONS = 250 + 500        # openTSNE's early exaggeration phase + its optimisation phase


def methods() -> list[str]:
    """The embeddings this installation can compute."""
    return [key for key, _text in available_methods()]


def available_methods() -> list[tuple[str, str]]:
    """(key, what the user reads) of each embedding this installation can compute."""
    found = [("tsne", "t-SNE")]
    if importlib.util.find_spec("umap") is not None:
        found.append(("umap", "UMAP"))
    return found


@dataclass(frozen=True)
class DatasetMap:
    layer: LayerId
    method: str
    rows: np.ndarray          # index rows, one per point
    points: np.ndarray        # (n, 2) float32
    clusters: np.ndarray      # (n,) k-means cluster of each point
    classes: np.ndarray | None   # (n,) predicted class, when the logits are indexed
    seconds: float


def reduce(features: np.ndarray, dimensions: int = PCA_DIMENSIONS, seed: int = 0) -> np.ndarray:
    """Normalised features projected on their first principal components."""
    from sklearn.decomposition import PCA
    normalised = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    count = min(dimensions, normalised.shape[0], normalised.shape[1])
    if count >= normalised.shape[1] or normalised.shape[0] < 2:    # one image has no variance to project on
        return normalised.astype(np.float32)
    return PCA(n_components=count, random_state=seed).fit_transform(normalised).astype(np.float32)


def tsne(reduced: np.ndarray, *, seed: int = 0, cancel: Event | None = None,
         progress: Callable[[float], None] | None = None, threads: int = 1) -> np.ndarray:
    """openTSNE's embedding of `reduced`, reporting progress and stopping when cancelled."""
    from openTSNE import TSNE
    calls = [0]

    def callback(_iteration, _error, _embedding) -> bool:
        calls[0] += 1
        if progress is not None:
            progress(min(calls[0] * 10 / TSNE_ITERATIONS, 1.0))
        return bool(cancel is not None and cancel.is_set())

    perplexity = float(min(30.0, (len(reduced) - 1) / 3.0))    # openTSNE's own bound: never lowered with a printed note
    embedding = TSNE(n_components=2, perplexity=perplexity, random_state=seed, n_jobs=threads, verbose=False,
                     callbacks=callback, callbacks_every_iters=10).fit(reduced)
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    return np.asarray(embedding, dtype=np.float32)


def umap_embedding(reduced: np.ndarray, *, seed: int = 0) -> np.ndarray:
    import umap
    return np.asarray(umap.UMAP(n_components=2, random_state=seed).fit_transform(reduced), dtype=np.float32)


def kmeans(reduced: np.ndarray, clusters: int = 10, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans
    count = max(1, min(clusters, len(reduced)))
    return KMeans(n_clusters=count, n_init=3, random_state=seed).fit_predict(reduced).astype(np.int32)


def _cache_path(index: DatasetIndex, layer: LayerId, method: str):
    return index.directory / array_file(layer, f"map-{method}").replace(".npy", ".npz")


def _fingerprint(index: DatasetIndex) -> np.ndarray:
    """What the map was made from: the rows and their files' sizes and times."""
    text = "|".join(f"{row['row']}:{row['path']}:{row['bytes']}:{row['mtime']}" for row in index.manifest["images"])
    # surrogateescape: a file name that is not UTF-8 reaches Python as lone surrogates; hashed as its bytes
    return np.frombuffer(hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest(), dtype=np.uint8)


def _cached(index: DatasetIndex, layer: LayerId, method: str, fingerprint: np.ndarray, seed: int) -> DatasetMap | None:
    """The map kept beside the index when it was made from these very rows with this seed. A damaged
    file (truncated by a crash, edited by hand) is not used: the map is computed again."""
    cache = _cache_path(index, layer, method)
    if not cache.is_file():
        return None
    try:
        with open(cache, "rb") as stream, np.load(stream, allow_pickle=False) as saved:   # closed when damaged too
            if not (np.array_equal(saved["fingerprint"], fingerprint) and int(saved["seed"]) == seed):
                return None
            rows, points, clusters = saved["rows"], saved["points"], saved["clusters"]
            seconds = float(saved["seconds"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        warnings.warn(f"{cache.name}: damaged map cache ({error.__class__.__name__}); computing the map again",
                      stacklevel=3)
        return None
    if not (np.array_equal(rows, index.valid_rows) and points.shape == (len(rows), 2)
            and clusters.shape == (len(rows),)):
        warnings.warn(f"{cache.name}: the map cache does not match the index; computing the map again", stacklevel=3)
        return None
    return DatasetMap(layer, method, rows, points, clusters, index.predicted(rows), seconds)


def _keep(cache, **arrays) -> None:
    """Write the map beside the index through a temporary file; a folder that cannot be written
    (read-only, full) costs the cache only, with a warning: the map itself is still drawn."""
    try:
        with atomic_output(cache) as temporary, open(temporary, "wb") as stream:
            np.savez(stream, **arrays)
    except CnnViewerError as error:
        warnings.warn(f"the map is not cached: {error}", stacklevel=3)


def dataset_map(index: DatasetIndex, layer: LayerId, *, method: str = "tsne", clusters: int = 10, seed: int = 0,
                cancel: Event | None = None, progress: Callable[[float, str], None] | None = None,
                threads: int = 1, use_cache: bool = True) -> DatasetMap:
    """The map of every indexed image at `layer` (computed, or read back when nothing changed)."""
    if method not in methods():
        raise IndexError_(f"{method} is not available here; choose one of {', '.join(methods())}")
    if len(index.valid_rows) < 3:
        raise IndexError_("a map needs at least 3 indexed images")
    fingerprint = _fingerprint(index)
    if use_cache:
        found = _cached(index, layer, method, fingerprint, seed)
        if found is not None:
            return found
    started = time.perf_counter()
    report = progress or (lambda _fraction, _text: None)
    report(0.0, "PCA")
    reduced = reduce(index.features(layer), seed=seed)
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    if method == "umap":
        report(0.1, "UMAP")
        points = umap_embedding(reduced, seed=seed)
    else:
        points = tsne(reduced, seed=seed, cancel=cancel, threads=threads,
                      progress=lambda fraction: report(0.05 + 0.9 * fraction, "t-SNE"))
    report(0.97, "k-means")
    groups = kmeans(reduced, clusters, seed)
    seconds = time.perf_counter() - started
    rows = index.valid_rows
    _keep(_cache_path(index, layer, method), rows=rows, points=points, clusters=groups, fingerprint=fingerprint,
          seed=seed, seconds=seconds)
    return DatasetMap(layer, method, rows, points, groups, index.predicted(rows), seconds)


def render_map(index: DatasetIndex, found: DatasetMap, side: int = 1600, thumb: int = 40,
               name: Callable[[int], str] | None = None) -> np.ndarray:
    """The map as a picture (`cnnviewer export dataset-map`): thumbnails framed in their predicted
    class's colour (k-means cluster's without the logits), as the panel colours them, with a margin
    and a legend (`name`: a class's name)."""
    from cnnviewer.engine.dataset.sheet import map_sheet
    labels, kind = (found.classes, "class") if found.classes is not None else (found.clusters, "cluster")
    def label(value: int) -> str:
        return name(value) if name is not None and kind == "class" else f"{kind} {value}"
    return map_sheet(found.points, index.thumbnails(found.rows), labels, label, side, thumb)
