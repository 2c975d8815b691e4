"""glibc malloc tuning for the live pipeline's per-frame tensors.

Why: with glibc's defaults, a model's multi-megabyte activations are handed back to the kernel
(munmap, or a trimmed heap top) after every frame and faulted in again on the next one. On the
Live pipeline's threads (their own malloc arenas, other threads allocating meanwhile) this cost
~7000 minor page faults and 20-30 ms of extra CPU per MobileNetV2 frame (bare loop: ~4000). A fixed
mmap threshold and a high trim threshold keep the freed memory mapped for the next frame: no
faults, and RSS stays at the steady-state peak (it does not grow frame by frame).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024     # glibc's maximum on 64-bit; blocks below come from the heap
TRIM_THRESHOLD = 256 * 1024 * 1024    # free heap top kept mapped up to this much

_done = False


def keep_freed_memory() -> bool:
    """Set the thresholds once per process (glibc only); whether they are in effect."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # musl or another libc: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
