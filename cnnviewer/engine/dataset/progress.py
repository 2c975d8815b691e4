"""Indexing progress as people read it; torch-free, so the GUI thread may use it."""

from __future__ import annotations

import time


class RateMeter:
    """'120/5,000 images · 48 images/s · 1:42 left' from successive (done, total) reports; the rate
    counts only what was computed since the first report (rows reused from an old index are free)."""

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None
        self.rate = 0.0

    def __call__(self, done: int, total: int) -> str:
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, done)
        elapsed, computed = now - self._first[0], done - self._first[1]
        if elapsed > 0.2 and computed > 0:
            self.rate = computed / elapsed
        text = f"{done:,}/{total:,} images"
        if self.rate > 0:
            left = int(round((total - done) / self.rate))
            text += f" · {self.rate:.1f} images/s · {left // 60}:{left % 60:02d} left"
        return text
