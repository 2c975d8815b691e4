"""Multi-faceted gradient ascent (Nguyen, Yosinski & Clune 2016), from a folder's index.

A unit may respond to several kinds of image (facets). Its top activating images in the folder
(default 150) are embedded by their pooled features at a high layer (the penultimate by default),
reduced by PCA and clustered by k-means into K facets; each facet starts from the mean of the
images nearest its cluster centre (default 15), as the model sees them (its centre crop), and all
K are then ascended together as one batch with the pixel-space regularizers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.dataset.embedding import kmeans, reduce
from cnnviewer.engine.dataset.index import DatasetIndex, IndexError_, retrieval_layer
from cnnviewer.engine.dataset.names import LOGITS
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.synthesis.pixels import PixelAscent
from cnnviewer.engine.synthesis.settings import PixelSettings


@dataclass(frozen=True)
class Facets:
    """The clusters of a unit's top images and where each facet starts."""

    members: list[np.ndarray]        # per facet: index rows of its images, nearest the centre first
    starts: torch.Tensor             # (K, 3, S, S) mean-subtracted 0..255 pixels: each facet's x(0)
    feature_layer: str


def _unit(target: Target) -> tuple[str, int]:
    if target.layer is None:
        return LOGITS, int(target.class_index)
    if target.channel is None:
        raise IndexError_("facets need a class or a channel")
    return target.layer, int(target.channel)


def find_facets(index: DatasetIndex, model: LoadedModel, target: Target, *, facets: int = 4, top: int = 150,
                nearest: int = 15, feature_layer: str | None = None, seed: int = 0) -> Facets:
    """Cluster the unit's `top` images into `facets` groups; each start is the mean of its `nearest`."""
    from cnnviewer.engine.media.images import load_image
    from cnnviewer.engine.runtime.inference import prepare_input

    layer, channel = _unit(target)
    hits = index.top(layer, channel, top)
    if len(hits) < facets:
        raise IndexError_(f"{len(hits)} images are too few for {facets} facets")
    rows = np.array([hit.row for hit in hits])
    feature_layer = feature_layer or retrieval_layer(index)
    reduced = reduce(index.features(feature_layer, rows), seed=seed)
    labels = kmeans(reduced, facets, seed)
    mean = torch.tensor(model.preprocess.mean, dtype=torch.float32).reshape(3, 1, 1) * 255.0
    members, starts = [], []
    for facet in range(facets):
        inside = np.flatnonzero(labels == facet)
        centre = reduced[inside].mean(axis=0)
        order = inside[np.argsort(np.linalg.norm(reduced[inside] - centre, axis=1), kind="stable")]
        chosen = rows[order]
        members.append(chosen)
        crops = [prepare_input(load_image(index.path(row)), model.preprocess, torch.device("cpu")).display
                 for row in chosen[:nearest]]
        average = torch.from_numpy(np.mean(np.stack(crops).astype(np.float32), axis=0)).permute(2, 0, 1)
        starts.append(average - mean)
    return Facets(members, torch.stack(starts), feature_layer)


def facet_ascent(model: LoadedModel, target: Target, found: Facets, settings: PixelSettings, *,
                 threads: int | None = None) -> PixelAscent:
    """All facets ascended together, one batch; `run` it like any PixelAscent.

    `threads` (default: one per facet, up to the cores) is what its runs should use: on one thread
    a batch of K costs K single runs (compute-bound convolutions), on K threads about half as much.
    """
    size = found.starts.shape[-1]
    return PixelAscent(model, target, PixelSettings(**{**settings.__dict__, "size": size}), start=found.starts,
                       threads=threads or max(1, min(os.cpu_count() or 1, len(found.starts))))
