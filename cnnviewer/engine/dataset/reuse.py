"""What a build may reuse: an old index or a checkpoint, when it was made for the same folder, model,
weights, preprocessing and layers, and is not damaged (a damaged one is rebuilt, with a warning)."""

from __future__ import annotations

import warnings
from pathlib import Path

from cnnviewer.engine.dataset import store
from cnnviewer.engine.dataset.index import FORMAT_VERSION, DatasetIndex, IndexError_, weights_digest
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.types import LayerId


class DamagedIndexWarning(UserWarning):
    """An index or checkpoint on disk was damaged; it is rebuilt."""


def model_key(model: LoadedModel) -> dict:
    """What an index is valid for, besides its folder and layers."""
    preprocess = model.preprocess
    return {"model": model.name, "weights_sha256": weights_digest(model),
            "preprocess": {"resize": preprocess.resize_size, "crop": preprocess.crop_size,
                           "mean": list(preprocess.mean), "std": list(preprocess.std),
                           "interpolation": preprocess.interpolation}}


def compatible(directory: Path, folder: Path, key: dict, layers: list[LayerId],
                damaged: str | None = None) -> DatasetIndex | None:
    """The index (complete or a checkpoint) in `directory` when it was made for this folder, model,
    weights, preprocessing and these layers: its rows for unchanged files need not be computed again.
    A damaged one is never used: with `damaged` (what happens instead), a warning says so."""
    if not store.has_index(directory):
        return None
    try:
        old = DatasetIndex(directory)
    except IndexError_ as error:
        if damaged:
            warnings.warn(f"{error}; {damaged}", DamagedIndexWarning, stacklevel=2)
        return None
    manifest = old.manifest
    same = (manifest.get("format") == FORMAT_VERSION and manifest.get("folder") == str(folder)
            and all(manifest.get(name) == value for name, value in key.items()) and manifest.get("layers") == layers)
    return old if same else None


