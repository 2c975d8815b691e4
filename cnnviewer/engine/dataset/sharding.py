"""`cnnviewer index` under torchrun: every process takes a disjoint shard, rank 0 merges.

Each rank computes whole batches (every world-th batch of the single-process order, no padding
duplicates) into a staging folder of its own and lists what it did in `part.json`. After a barrier,
rank 0 copies those rows into its own arrays, writes the index, and a last barrier lets the other
ranks open it. gloo on CPUs, NCCL on GPUs; only barriers cross the wire, the rows go through the
shared file system (the index folder must be visible to every rank, as on one node or a shared disk).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cnnviewer.engine.dataset import store
from cnnviewer.engine.dataset.builder import IndexBuild
from cnnviewer.engine.dataset.index import KINDS, DatasetIndex, array_file
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.types import LayerId

PART = "part.json"


def distributed_world() -> tuple[int, int] | None:
    """(rank, world size) when this process is one of several started by torchrun, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return int(os.environ.get("RANK", "0")), world


def _barrier(dist, device) -> None:
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[device.index or 0])
    else:
        dist.barrier()


def build_sharded(folder: str | Path, model: LoadedModel, directory: str | Path, world: tuple[int, int], *,
                  layers: Sequence[LayerId] | None = None, batch_size: int = 32, workers: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> DatasetIndex:
    """This rank's share of `build_index`; every rank returns the merged index."""
    import torch.distributed as dist

    rank, size = world
    started_here = not dist.is_initialized()
    if started_here:
        dist.init_process_group("nccl" if model.device.type == "cuda" else "gloo")
    try:
        build = None
        if rank == 0:   # rank 0 settles the folder (a checkpoint becomes .resume) before the others plan
            build = IndexBuild(folder, model, directory, layers=layers, batch_size=batch_size, workers=workers,
                               shard=world)
        _barrier(dist, model.device)
        if rank != 0:
            build = IndexBuild(folder, model, directory, layers=layers, batch_size=batch_size, workers=workers,
                               shard=world)
        build.run(progress=progress if rank == 0 else None)
        build.close()
        if rank != 0:
            _write_part(build)
        _barrier(dist, model.device)
        if rank == 0:
            for other in range(1, size):
                _merge_part(build, build.directory / f"{build.staging.name}-rank{other}")
            build.finish()
        _barrier(dist, model.device)
        return DatasetIndex(directory)
    finally:
        if started_here:
            dist.destroy_process_group()


def _write_part(build) -> None:
    build._flush()
    mine = set(build.rows_of_work)
    part = {"rows": build.rows_of_work, "shapes": {name: list(shape) for name, shape in build.shapes.items()},
            "images": [row for row in build.images if row["row"] in mine],
            "skipped": [row for row in build.skipped if row["row"] in mine],
            "read": build.read}
    temporary = build.staging / f".{PART}"
    temporary.write_text(json.dumps(part), encoding="utf-8")
    temporary.replace(build.staging / PART)


def _merge_part(build, staging: Path) -> None:
    """Copy another rank's rows into rank 0's arrays, and its rows into the manifest's lists."""
    part = json.loads((staging / PART).read_text(encoding="utf-8"))
    build.shapes.update({name: tuple(shape) for name, shape in part["shapes"].items()})
    rows = np.array(part["rows"], dtype=np.int64)
    if len(rows):
        for name in build.layers:
            for kind in KINDS:
                source = staging / array_file(name, kind)
                if not source.is_file():
                    continue
                values = np.load(source, mmap_mode="r")
                if (name, kind) not in build.arrays:
                    build._allocate(name, values.shape[1])
                build.arrays[(name, kind)][rows] = values[rows]
        if (staging / "thumbs.npy").is_file():
            if ("", "thumbs") not in build.arrays:
                build._allocate_thumbs()
            build.arrays[("", "thumbs")][rows] = np.load(staging / "thumbs.npy", mmap_mode="r")[rows]
    build.images += part["images"]
    build.skipped += part["skipped"]
    build.read += part["read"]
    store.remove(staging)
