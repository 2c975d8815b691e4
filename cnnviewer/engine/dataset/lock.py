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
from collections.abc import Callable
from pathlib import Path
from threading import Event

from cnnviewer.engine.errors import Cancelled

LOCK = ".lock"
POLL_SECONDS = 0.2


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

    def acquire(self, waiting: Callable[[str], None] | None = None, cancel: Event | None = None) -> bool:
        """Take the lock, waiting for another build if there is one. False when the folder cannot be
        written at all (read-only): nothing can be built there, and reading needs no lock.

        `waiting` hears (once) that another process holds it (else a warning says so); with `cancel`
        the wait polls and ends in Cancelled when it is set, so the app's job thread, which every
        panel shares, is never stuck behind a command-line run."""
        try:
            handle = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return False
            raise
        try:
            if not _try_lock(handle):
                holder = os.pread(handle, 32, 0).decode("ascii", "replace").strip() or "?"
                message = f"{self.root} is being indexed by process {holder}; waiting for it to finish"
                if waiting is not None:
                    waiting(message)
                else:
                    warnings.warn(message, IndexBusyWarning, stacklevel=3)
                if cancel is None:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                else:
                    while not _try_lock(handle):
                        if cancel.wait(POLL_SECONDS):
                            raise Cancelled()
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


def _try_lock(handle: int) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
