"""The Qt binding itself: signals emitted from Python must not corrupt reference counts.

PySide6 6.12.0's Signal.emit() dropped a reference to True on every call, so
a long live-detection run crashed the app (bool_dealloc) after a few thousand
frames; pyproject.toml keeps it below 6.12. This test catches such a binding.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    plain = Signal()
    payload = Signal(object)


def test_emitting_signals_keeps_reference_counts(qapp):
    emitter = _Emitter()
    received = []
    emitter.plain.connect(lambda: received.append(1))
    emitter.payload.connect(received.append)
    before = sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(None)
    for index in range(500):
        emitter.plain.emit()
        emitter.payload.emit(index)
    after = sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(None)
    assert len(received) == 1000
    assert all(abs(a - b) < 50 for a, b in zip(after, before)), (before, after)
