"""Keep freed tensor memory in the process, so every forward pass reuses warm pages.

A CPU forward allocates its large activations anew for each pass (a batch of 32 at 224 px through
MobileNetV2: blocks of 50 MiB). With glibc's defaults each such block is a fresh mmap whose pages
fault in zeroed and go back to the kernel when freed; measured here, that is most of a CPU
forward's time, spent in the kernel: MobileNetV2 ran a batch of 32 at 24 images/s on the job
thread, 88 images/s with the settings below (the recorded pass of ResNet-50 had been 1.35x a plain
forward for the same reason, benchmarks/bench_foundation.py). So: big blocks come from the heap
(mmap threshold 1 GiB where glibc accepts it, else its 32 MiB ceiling), freed memory is kept
(trim threshold 1 GiB), and one arena serves every thread (a thread's own arena is made of 64 MiB
heaps, too small for such blocks, which then fall back to mmap). Called before any thread starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
_MMAP_THRESHOLDS = (1 << 30, 32 << 20)   # 1 GiB; else the ceiling older glibc keep (HEAP_MAX_SIZE / 2)


def keep_freed_memory() -> bool:
    """Tune glibc's allocator for large, short-lived tensors; no-op elsewhere.

    Returns:
        True when the allocator was tuned (Linux with glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # musl or another libc without mallopt
        return False
    ok = (any(mallopt(_M_MMAP_THRESHOLD, threshold) == 1 for threshold in _MMAP_THRESHOLDS)
          and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
          and mallopt(_M_TOP_PAD, 64 << 20) == 1
          and mallopt(_M_ARENA_MAX, 1) == 1)
    if not ok:
        log.info("glibc refused the allocator settings; running with its defaults")
    return ok
