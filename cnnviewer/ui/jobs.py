"""JobRunner seen from the GUI: callbacks arrive on the GUI thread, stale ones never."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from PySide6.QtCore import QObject, Signal

from cnnviewer.engine.jobs import JobContext, JobRunner
from cnnviewer.ui.main_thread import Dispatcher


class UiJobs(QObject):
    """Submit engine work from the GUI; results come back on the GUI thread.

    Signals tell the status bar what is going on: `busy` (key, text) when a
    job with a label starts, `progressed` (fraction, text), `finished` (key).
    """

    progressed = Signal(float, str)
    busy = Signal(str, str)
    finished = Signal(str)
    failed = Signal(str)
    cancelled = Signal(str)

    def __init__(self, runner: JobRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self._dispatcher = Dispatcher.shared()
        self._holds = 0
        self._held: list[tuple[str, Callable[[], None]]] = []

    @contextmanager
    def held(self) -> Iterator[None]:
        """Jobs submitted inside go to the job thread together when the block ends.

        Why: a handler that makes every panel take up a new model submits a job per panel; the
        first would start at once and run Python (tracing, building) on the job thread while the
        GUI thread still runs the handler, and each of the handler's calls back into Python would
        then wait for the GIL. Held, the handler runs alone and the jobs follow right after it.
        """
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if not self._holds:
                held, self._held = self._held, []
                for _key, start in held:
                    start()

    def _drop_held(self, key: str) -> None:
        self._held = [(held_key, start) for held_key, start in self._held if held_key != key]

    def is_holding(self) -> bool:
        """Jobs are waiting for a `held` block to end."""
        return bool(self._held)

    def submit(self, key: str, work: Callable[[JobContext], Any], *,
               on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[str], None] | None = None,
               label: str = "", detach_on_cancel: bool = False, first: bool = False) -> None:
        """Run `work` on the job thread; the latest submission per key wins.

        `detach_on_cancel`, `first`: see JobRunner.submit.
        """
        generation_box: list[int] = []

        def current() -> bool:
            return bool(generation_box) and self.runner.is_current(key, generation_box[0])

        def done(result: Any) -> None:
            if current():
                self.finished.emit(key)
                if on_done is not None:
                    on_done(result)

        def error(message: str) -> None:
            if current():
                self.finished.emit(key)
                self.failed.emit(message)
                if on_error is not None:
                    on_error(message)

        def progress(fraction: float, text: str) -> None:
            if current():
                self.progressed.emit(fraction, text)

        if label:
            self.busy.emit(key, label)
        wrap = self._dispatcher.wrap

        def start() -> None:
            generation_box.append(self.runner.submit(
                key, work, on_done=wrap(done), on_error=wrap(error), on_progress=wrap(progress),
                detach_on_cancel=detach_on_cancel, first=first))

        if self._holds:             # the latest per key wins here too
            self._drop_held(key)
            self._held.append((key, start))
        else:
            start()

    def cancel(self, key: str) -> None:
        """Stop a job; its result will not be delivered."""
        self._drop_held(key)
        self.runner.cancel(key)
        self.finished.emit(key)
        self.cancelled.emit(key)
