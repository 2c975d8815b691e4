"""Refuse what only looks like a file: opening a FIFO or a device for reading blocks until someone writes."""

from __future__ import annotations

from pathlib import Path

from cnnviewer.engine.errors import CnnViewerError, ImageError


def regular_file(path: str | Path, error: type[CnnViewerError] = ImageError) -> Path:
    """`path` if it is a regular file (or a link to one), else `error` naming what it is."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path.name}: no such file")
    if path.is_dir():
        raise error(f"{path.name}: is a folder, not a file")
    if not path.is_file():
        raise error(f"{path.name}: not a regular file (a pipe, socket or device), so it is not read")
    return path
