"""How an index reaches the disk: a crash, a kill -9 or a power cut at any moment leaves either the
old index or the new one, never a mix, and a full disk is an error, never a SIGBUS.

An index folder holds generations: `gen-<n>/` (a manifest and its arrays) and `current`, a symlink
naming the one in use. A build writes a whole new generation in `.building/`, syncs it, renames it
to `gen-<n>`, and then switches `current` with ONE atomic rename of a new symlink over it: that
rename is the commit. Before it readers see the old generation, after it the new one; older
generations are removed afterwards. (An index of the older layout, manifest and arrays directly in
the folder, is still read, and replaced by a generation at its next update.) Torch-free.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from cnnviewer.engine.dataset.names import MANIFEST

CURRENT = "current"
GENERATION = "gen-"


def crash_point(step: str) -> None:
    """Called after each step of a commit. Does nothing: tests replace it to inject a crash there."""


def remove(path: Path) -> None:
    """Remove a file, a symlink or a folder tree, whichever `path` is (a crash may leave any)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink(missing_ok=True)


def current_generation(root: Path) -> Path | None:
    """The folder holding the index in use under `root` (None: there is none)."""
    link = root / CURRENT
    if os.path.lexists(link):
        return Path(os.path.realpath(link))
    if (root / MANIFEST).is_file():       # the older layout: the index is the folder itself
        return root
    return None


def has_index(root: Path) -> bool:
    """Whether `root` holds an index (good or damaged): nothing there means build, not rebuild."""
    return os.path.lexists(root / CURRENT) or os.path.lexists(root / MANIFEST)


def fsync(path: Path) -> None:
    """Push a file's or a folder's data to the disk (a power cut keeps what the commit relies on)."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _generations(root: Path) -> list[Path]:
    return [p for p in root.glob(f"{GENERATION}*") if p.name[len(GENERATION):].isdigit()]


def publish(root: Path, staging: Path) -> Path:
    """Make the finished index in `staging` the one in use under `root`, atomically; its new folder."""
    for item in staging.iterdir():
        fsync(item)
    fsync(staging)
    crash_point("synced")
    number = 1 + max((int(p.name[len(GENERATION):]) for p in _generations(root)), default=0)
    generation = root / f"{GENERATION}{number}"
    staging.rename(generation)
    fsync(root)
    crash_point("renamed")
    link, target = root / f".{CURRENT}.{os.getpid()}", root / CURRENT
    remove(link)
    os.symlink(generation.name, link)
    if target.is_dir() and not target.is_symlink():
        remove(target)                    # a real folder named `current` (by hand) cannot be renamed over
    os.replace(link, target)
    fsync(root)
    crash_point("switched")
    return generation


def tidy(root: Path) -> None:
    """Remove what no reader uses: older generations, one never switched to, the older layout's files
    (its manifest first), and a half-made link. Runs only under the index lock."""
    in_use = current_generation(root)
    if in_use is not None and in_use != root and in_use.is_dir():
        for old in _generations(root):
            if Path(os.path.realpath(old)) != in_use:   # both resolved: `root` may be relative (-o idx/x)
                remove(old)
                crash_point("old generation removed")
        for item in [root / MANIFEST, *root.glob("*.npy"), *root.glob("*.npz")]:
            remove(item)                  # the manifest first: a half-removed old layout is never read
    elif in_use is None:
        for old in _generations(root):
            remove(old)
    for item in root.glob(f".{CURRENT}.*"):
        remove(item)


def allocate(path: Path, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A memory-mapped .npy of `shape`, its disk space reserved first: writing into a sparse mapping
    on a full disk kills the process with SIGBUS; a reservation fails with ENOSPC instead."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    handle = os.open(path, os.O_RDWR)
    try:
        reserve(handle, os.fstat(handle).st_size)
    except OSError:
        del array
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(handle)
    return array


def reserve(handle: int, size: int) -> None:
    """Allocate `size` bytes of the open file on the disk now (zeros where nothing was written)."""
    try:
        os.posix_fallocate(handle, 0, size)
        return
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    written = 0                        # a file system without fallocate: write every block ourselves
    while written < size:              # (what is there, so the .npy header stays; holes become zeros)
        chunk = min(1 << 20, size - written)
        os.pwrite(handle, os.pread(handle, chunk, written), written)
        written += chunk


def by_channel(source: Path, target: Path, rows_at_once: int = 4096) -> None:
    """The (N, C) maxima written again as (C, N): one channel's values over every image are then
    contiguous, so a top-k query reads 40 KB at 10,000 images, not the whole layer."""
    values = np.load(source, mmap_mode="r")
    out = allocate(target, values.dtype, (values.shape[1], values.shape[0]))
    for start in range(0, values.shape[0], rows_at_once):
        out[:, start:start + rows_at_once] = values[start:start + rows_at_once].T
    out.flush()
    del out


def write_manifest(directory: Path, manifest: dict) -> None:
    """The manifest through a synced temporary file and a rename: never half a manifest."""
    temporary = directory / f".{MANIFEST}.{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(manifest, indent=1))
            stream.flush()
            os.fsync(stream.fileno())
        temporary.replace(directory / MANIFEST)
    finally:
        temporary.unlink(missing_ok=True)


def writable_folder(directory: Path, failure: type[Exception]) -> None:
    """`directory` made when missing; one line when it cannot be (a file, a device, read-only)."""
    if os.path.lexists(directory) and not directory.is_dir():
        raise failure(f"{directory}: not a folder, so no index can be kept there")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise failure(f"{directory}: cannot be made ({error.strerror or error})") from None
