"""Keep freed tensor memory in the process, so recorded passes reuse warm pages.

A recorded forward pass keeps every module's output alive (~100 MiB for
MobileNetV2 at 224 px). With glibc's defaults, memory freed when an old pass
is dropped goes back to the kernel and the next pass page-faults it in again;
measured here, that made the recorded pass of ResNet-50 1.35x a plain forward
instead of 1.05x (benchmarks/bench_foundation.py). Raising the trim threshold
and the mmap threshold keeps those pages for reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 << 20   # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)


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
    ok = (mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
          and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
          and mallopt(_M_TOP_PAD, 64 << 20) == 1)
    if not ok:
        log.info("glibc refused the allocator settings; running with its defaults")
    return ok
