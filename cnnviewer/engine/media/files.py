"""Files in and out: refuse what only looks like a file (a FIFO blocks a reader for ever); write outputs
so that a failure never leaves a truncated file, and check the target before the work."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnviewer.engine.errors import CnnViewerError, ImageError

_UMASK = os.umask(0o022)   # read once (umask can only be read by setting it) and put back at once
os.umask(_UMASK)


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


def writable_target(path: str | Path, error: type[CnnViewerError] = CnnViewerError) -> Path:
    """`path` if a file can be written there; checked before the work, so nothing is computed in vain."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise error(f"{path}: is a folder; give a file name")
    if not folder.is_dir():
        raise error(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise error(f"{path}: cannot be written (read-only)")
    return path


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` to write into; it replaces `path` only once the writing succeeded.

    A full disk or a failed encoder therefore never leaves a truncated file under the real name.

    Raises:
        CnnViewerError: the file could not be written (one line).
    """
    path = Path(path)
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    except OSError as exc:       # a read-only or immutable folder: refused before anything is written
        raise CnnViewerError(f"{path}: could not be written ({exc.strerror or exc})") from None
    os.close(handle)
    try:
        yield Path(temp)
        os.chmod(temp, 0o666 & ~_UMASK)   # mkstemp makes it private; an output gets the usual permissions
        os.replace(temp, path)
    except OSError as exc:
        raise CnnViewerError(f"{path}: could not be written ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
