"""The rows a paused build has computed so far, opened as an index: Cancel keeps what was done, so
the Dataset panel can show the top images, neighbours and map of those rows until Resume finishes.

A checkpoint (builder.py) is a folder with the layout of a generation whose manifest says
`"complete": false` and lists only the rows already computed; its arrays have a row for every file
(the others are zero and never returned, as skipped rows are). It lives in `<index>/.building/`
right after a cancel, or in `<index>/.resume/` once a later build has planned from it; the build
that finishes removes it (an open one stays readable: its arrays are memory-mapped). A map made of
it is cached beside its arrays, as for any index, and goes with it.
"""

from __future__ import annotations

from pathlib import Path

from cnnviewer.engine.dataset.index import DatasetIndex, IndexError_
from cnnviewer.engine.dataset.names import MANIFEST

# The checkpoint folders builder.py writes (its STAGING and RESUME), the newer first; named here so
# that reading a checkpoint does not import the builder (and torch with it).
CHECKPOINTS = (".building", ".resume")


def is_partial(index: DatasetIndex | None) -> bool:
    """Whether `index` is a paused build's checkpoint rather than a finished index."""
    return index is not None and index.manifest.get("complete") is False


def paused_note(index: DatasetIndex | None) -> str:
    """'paused: 64 of 130 indexed; Resume to finish' for a checkpoint ('' for a finished index): every
    view of one says it shows only part of the folder."""
    if not is_partial(index):
        return ""
    done = len(index.rows) + len(index.manifest["skipped"])
    return f"paused: {done:,} of {index.manifest['files']:,} indexed; Resume to finish"


def open_checkpoint(directory: str | Path) -> DatasetIndex | None:
    """The checkpoint of a paused build of the index in `directory`, when there is a readable one
    holding at least one image; None otherwise (no checkpoint, an empty one, or a damaged one: the
    next build redoes it, so nothing is lost by not showing it)."""
    for name in CHECKPOINTS:
        folder = Path(directory) / name
        if not (folder / MANIFEST).is_file():
            continue
        try:
            index = DatasetIndex(folder)
        except IndexError_:
            continue
        if is_partial(index) and index.rows:
            return index
    return None
