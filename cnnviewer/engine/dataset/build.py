"""Indexing a folder: `build_index`, in one process (builder.IndexBuild) or sharded under torchrun
(sharding.py). Both of those import builder.py; neither imports this module, so there is no cycle.
See builder.py for the build itself and store.py for how an index reaches the disk."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from threading import Event

from cnnviewer.engine.dataset.builder import RESUME, STAGING, IndexBuild  # noqa: F401 - the public names
from cnnviewer.engine.dataset.index import DatasetIndex
from cnnviewer.engine.dataset.reuse import model_key  # noqa: F401
from cnnviewer.engine.dataset.sharding import build_sharded, distributed_world
from cnnviewer.engine.dataset.store import by_channel  # noqa: F401
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.types import LayerId


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
    world = distributed_world()
    if world is not None:
        return build_sharded(folder, model, directory, world, layers=layers, batch_size=batch_size,
                             workers=workers, progress=progress)
    build = IndexBuild(folder, model, directory, layers=layers, batch_size=batch_size, workers=workers,
                       mp_context=mp_context)
    build.run(cancel=cancel, progress=progress)
    return build.finish()
