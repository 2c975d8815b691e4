"""Run torch work on one background thread; the latest request per key wins.

One worker thread owns the models, so hooks never race. `submit(key, ...)`
drops a pending job with the same key and cancels the running one; results of
superseded jobs are never delivered. Callbacks are called on the worker
thread: the UI wraps them so they re-enter the GUI thread (ui/main_thread.py).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnnviewer.engine.errors import Cancelled, CnnViewerError, describe

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What a running job may use: its cancel flag and a progress reporter."""

    cancel: threading.Event = field(default_factory=threading.Event)
    report: Callable[[float, str], None] = lambda fraction, text: None

    def check(self) -> None:
        """Raise Cancelled if the job was superseded or cancelled."""
        if self.cancel.is_set():
            raise Cancelled()

    def progress(self, fraction: float, text: str = "") -> None:
        """Report progress (0..1) and stop here if cancelled."""
        self.check()
        self.report(fraction, text)

    def part(self, number: int, count: int, text: str) -> JobContext:
        """A context for the `number`-th of `count` equal parts of this job: its 0..1 is this one's slice."""
        return JobContext(self.cancel, lambda fraction, _text: self.report((number + fraction) / count, text))


@dataclass
class _Job:
    key: str
    generation: int
    work: Callable[[JobContext], Any]
    on_done: Callable[[Any], None] | None
    on_error: Callable[[str], None] | None
    on_progress: Callable[[float, str], None] | None
    context: JobContext
    detach_on_cancel: bool = False


error_message = describe   # one line for the status bar


class JobRunner:
    """A single worker thread with keyed, latest-wins, cancellable jobs."""

    def __init__(self, torch_threads: int | None = 1, start: bool = True) -> None:
        """`start=False`: the thread waits for `start()` before it imports torch. The app starts it
        once the window's visible panels are built: torch's import and the GUI thread's work share
        one GIL, and run side by side each was slowed far more than run one after the other."""
        self._go = threading.Event()
        self._lock = threading.Condition()
        self._pending: OrderedDict[str, _Job] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._running: _Job | None = None
        self._closed = False
        self._last: Callable[[], None] | None = None
        self._side_threads: set[threading.Thread] = set()
        self._torch_threads = torch_threads
        self._thread = threading.Thread(target=self._loop, name="cnnviewer-jobs", daemon=True)
        self._thread.start()
        if start:
            self._go.set()

    def start(self) -> None:
        """Let the thread import torch and run the jobs submitted so far (see __init__)."""
        self._go.set()

    def submit(self, key: str, work: Callable[[JobContext], Any], *,
               on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[str], None] | None = None,
               on_progress: Callable[[float, str], None] | None = None,
               detach_on_cancel: bool = False, first: bool = False) -> int:
        """Queue `work(context)`; supersedes any earlier job with the same key.

        `detach_on_cancel` is for work that builds new objects and touches no
        shared model (loads): it runs on a side thread that the job thread
        abandons the moment it is cancelled, so a load stuck in a step that
        cannot check the flag (building a big model, reading a file) never
        holds the other panels' work up. Its late result is discarded.

        `first`: run it before the jobs already waiting (the forward pass every panel draws from:
        at launch it no longer waits for the Filters panel's grid).

        Returns:
            The job's generation, for `is_current` checks after a thread hop.
        """
        with self._lock:
            generation = self._generations.get(key, 0) + 1
            self._generations[key] = generation
            self._pending.pop(key, None)
            if self._running is not None and self._running.key == key:
                self._running.context.cancel.set()
            job = _Job(key, generation, work, on_done, on_error, on_progress, JobContext(),
                       detach_on_cancel)
            self._pending[key] = job
            if first:
                self._pending.move_to_end(key, last=False)
            self._lock.notify()
            return generation

    def is_current(self, key: str, generation: int) -> bool:
        """True while no later job with this key has been submitted or cancelled."""
        with self._lock:
            return self._generations.get(key) == generation and not self._closed

    def cancel(self, key: str) -> None:
        """Drop a pending job and stop a running one with this key; nothing is delivered."""
        with self._lock:
            self._generations[key] = self._generations.get(key, 0) + 1
            self._pending.pop(key, None)
            if self._running is not None and self._running.key == key:
                self._running.context.cancel.set()

    def running(self) -> str | None:
        """The key of the job on the thread now, if any."""
        with self._lock:
            return self._running.key if self._running is not None else None

    def is_busy(self) -> bool:
        """True while any job is pending or running."""
        with self._lock:
            return bool(self._pending) or self._running is not None

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no job is pending or running (tests and the CLI only)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending and self._running is None, timeout)

    def close(self, last: Callable[[], None] | None = None, timeout: float = 10.0) -> bool:
        """Cancel everything, run `last` on the job thread (e.g. stop a build's decoding workers,
        which hold torch objects that only that thread touches), then join the job thread and any
        abandoned load. A thread still inside torch when the interpreter exits can abort the process
        ("terminate called without an active exception"), so the app waits for all of them here.

        Returns:
            True if every thread stopped within `timeout` seconds.
        """
        with self._lock:
            if not self._closed:
                self._last = last
            self._closed = True
            for job in self._pending.values():
                job.context.cancel.set()
            self._pending.clear()
            if self._running is not None:
                self._running.context.cancel.set()
            self._lock.notify_all()
            side = list(self._side_threads)
        self._go.set()   # a thread still held back wakes only to end
        deadline = time.monotonic() + timeout
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for thread in side:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive() and not any(thread.is_alive() for thread in side)

    def _current(self, job: _Job) -> bool:
        with self._lock:
            return self._generations.get(job.key) == job.generation and not self._closed

    def _loop(self) -> None:
        self._go.wait()
        if self._torch_threads and not self._closed:
            from cnnviewer.engine.runtime.startup import import_torch

            import_torch()   # the worker imports torch, not the UI thread (and quickly: see startup.py)
            import torch
            torch.set_num_threads(self._torch_threads)
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    last, self._last = self._last, None
                    break
                _, job = self._pending.popitem(last=False)
                self._running = job
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running = None
                    self._lock.notify_all()
        if last is not None:
            try:
                last()
            except Exception:  # noqa: BLE001 - closing goes on
                log.exception("closing work of the job thread failed")

    def _detached(self, job: _Job) -> Any:
        """Run the job's work on a side thread; give up on it as soon as it is cancelled."""
        finished = threading.Event()
        outcome: dict[str, Any] = {}

        def side() -> None:
            try:
                outcome["result"] = job.work(job.context)
            except BaseException as error:  # noqa: BLE001 - re-raised on the job thread
                outcome["error"] = error
            finally:
                finished.set()
                with self._lock:
                    self._side_threads.discard(thread)

        thread = threading.Thread(target=side, name=f"cnnviewer-{job.key}", daemon=True)
        with self._lock:
            self._side_threads.add(thread)
        thread.start()
        while not finished.wait(0.02):
            if job.context.cancel.is_set():
                raise Cancelled()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    @staticmethod
    def _deliver(job: _Job, callback: Callable[..., None] | None, *args: Any) -> None:
        """Call a callback; a bug in one must not kill the worker thread."""
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - logged, the thread goes on
            log.exception("callback of job %s failed", job.key)

    def _run(self, job: _Job) -> None:
        def report(fraction: float, text: str) -> None:
            if self._current(job):
                self._deliver(job, job.on_progress, fraction, text)

        job.context.report = report
        try:
            result = self._detached(job) if job.detach_on_cancel else job.work(job.context)
        except Cancelled:
            return
        except Exception as error:  # noqa: BLE001 - every failure becomes a message
            if not isinstance(error, CnnViewerError):
                log.warning("job %s failed:\n%s", job.key, traceback.format_exc())
            if self._current(job):
                self._deliver(job, job.on_error, error_message(error))
            return
        if self._current(job):
            self._deliver(job, job.on_done, result)
