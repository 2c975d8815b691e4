"""One build at a time per index folder, across processes (two `index` runs, the app and the CLI).

An exclusive `fcntl.flock` on `<index>/.lock`, held from planning to commit: the second build waits
(and says so, naming the process) instead of deleting the first one's staging arrays. The kernel
drops the lock when its holder dies, even by kill -9, so a crash never leaves the folder locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import warnings
from pathlib import Path

LOCK = ".lock"


class IndexBusyWarning(UserWarning):
    """Another process is building this index: this one waits for it."""


class IndexLock:
    """The lock of one index folder; `acquire()` waits for another holder, `release()` is idempotent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._handle: int | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> bool:
        """Take the lock, waiting for another build if there is one. False when the folder cannot be
        written at all (read-only): nothing can be built there, and reading needs no lock."""
        try:
            handle = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return False
            raise
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(handle, 32, 0).decode("ascii", "replace").strip() or "?"
                warnings.warn(f"{self.root} is being indexed by process {holder}; waiting for it to finish",
                              IndexBusyWarning, stacklevel=3)
                fcntl.flock(handle, fcntl.LOCK_EX)
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(handle)
            raise
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            os.close(handle)            # closing the descriptor drops the flock

    def __del__(self) -> None:
        self.release()
