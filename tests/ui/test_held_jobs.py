"""Jobs submitted while a GUI handler holds them start together when it ends (a model switch)."""

from __future__ import annotations

import threading

from cnnviewer.engine.jobs import JobRunner
from cnnviewer.ui.jobs import UiJobs


def test_held_jobs_start_after_the_block_latest_per_key_and_cancel_drops_them(qtbot):
    jobs = UiJobs(JobRunner(torch_threads=None))
    started: list[str] = []
    results: list[str] = []
    lock = threading.Lock()

    def work(name: str):
        def run(_context):
            with lock:
                started.append(name)
            return name
        return run

    try:
        with jobs.held():
            jobs.submit("a", work("a1"), on_done=results.append)
            jobs.submit("b", work("b"), on_done=results.append)
            jobs.submit("a", work("a2"), on_done=results.append)      # replaces a1 before it ever runs
            jobs.submit("c", work("c"), on_done=results.append)
            jobs.cancel("c")                                          # never starts
            with jobs.held():                                         # nested: still held
                jobs.submit("d", work("d"), on_done=results.append)
            qtbot.wait(200)
            assert started == [] and jobs.is_holding()
        assert not jobs.is_holding()
        qtbot.waitUntil(lambda: sorted(results) == ["a2", "b", "d"], timeout=5000)
        qtbot.wait(100)
        assert sorted(started) == ["a2", "b", "d"]
        jobs.submit("e", work("e"), on_done=results.append)          # not held: runs at once
        qtbot.waitUntil(lambda: "e" in results, timeout=5000)
    finally:
        jobs.runner.close()
