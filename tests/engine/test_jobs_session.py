"""The job thread (latest wins, cancel, errors, progress) and the shared session state."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from cnnviewer.engine.errors import Cancelled, ImageError
from cnnviewer.engine.jobs import JobContext, JobRunner, error_message
from cnnviewer.engine.session import Selection, Session

TIMEOUT = 5.0


@pytest.fixture
def runner() -> Iterator[JobRunner]:
    jobs = JobRunner(torch_threads=None)   # leave the process-wide torch thread count alone
    yield jobs
    jobs.close()


class Recorder:
    """Collects callbacks from the worker thread and lets the test wait for them."""

    def __init__(self) -> None:
        self.done: list[object] = []
        self.errors: list[str] = []
        self.progress: list[tuple[float, str]] = []
        self.event = threading.Event()

    def on_done(self, result: object) -> None:
        self.done.append(result)
        self.event.set()

    def on_error(self, message: str) -> None:
        self.errors.append(message)
        self.event.set()

    def on_progress(self, fraction: float, text: str) -> None:
        self.progress.append((fraction, text))

    def callbacks(self) -> dict:
        return {"on_done": self.on_done, "on_error": self.on_error, "on_progress": self.on_progress}


def blocking_job(started: threading.Event, saw_cancel: list[bool], result: object):
    """A job that waits until it is cancelled (or TIMEOUT) and then returns `result`."""
    def work(context: JobContext) -> object:
        started.set()
        saw_cancel.append(context.cancel.wait(TIMEOUT))
        return result
    return work


# --------------------------------------------------------------------------- JobRunner

def test_latest_submission_wins(runner: JobRunner) -> None:
    started, saw_cancel, recorder = threading.Event(), [], Recorder()
    first = runner.submit("maps", blocking_job(started, saw_cancel, "first"), **recorder.callbacks())
    assert started.wait(TIMEOUT)

    second = runner.submit("maps", lambda context: "second", **recorder.callbacks())

    assert runner.wait_idle(TIMEOUT)
    assert saw_cancel == [True]
    assert recorder.done == ["second"]
    assert (first, second) == (1, 2)
    assert not runner.is_current("maps", first) and runner.is_current("maps", second)


def test_pending_job_is_replaced_not_run(runner: JobRunner) -> None:
    started, release, ran = threading.Event(), threading.Event(), []
    runner.submit("hold", lambda context: (started.set(), release.wait(TIMEOUT)))
    assert started.wait(TIMEOUT)
    recorder = Recorder()

    runner.submit("maps", lambda context: ran.append("old") or "old", **recorder.callbacks())
    runner.submit("maps", lambda context: ran.append("new") or "new", **recorder.callbacks())
    release.set()

    assert runner.wait_idle(TIMEOUT)
    assert ran == ["new"] and recorder.done == ["new"]


def test_different_keys_both_run(runner: JobRunner) -> None:
    maps, filters = Recorder(), Recorder()
    runner.submit("maps", lambda context: 1, **maps.callbacks())
    runner.submit("filters", lambda context: 2, **filters.callbacks())

    assert runner.wait_idle(TIMEOUT)
    assert (maps.done, filters.done) == ([1], [2])


def test_jobs_run_on_one_worker_thread(runner: JobRunner) -> None:
    threads: list[threading.Thread] = []
    for key in "abc":
        runner.submit(key, lambda context: threads.append(threading.current_thread()))

    assert runner.wait_idle(TIMEOUT)
    assert len(threads) == 3 and len(set(threads)) == 1
    assert threads[0] is not threading.current_thread()


def test_errors_become_one_line_messages(runner: JobRunner) -> None:
    def fail(context: JobContext) -> None:
        raise ValueError("bad layer\nwith a traceback-like second line")

    recorder = Recorder()
    runner.submit("maps", fail, **recorder.callbacks())

    assert recorder.event.wait(TIMEOUT)
    assert recorder.errors == ["ValueError: bad layer"] and recorder.done == []


def test_engine_errors_keep_their_message(runner: JobRunner) -> None:
    def fail(context: JobContext) -> None:
        raise ImageError("cat.png: not an image Pillow can read")

    recorder = Recorder()
    runner.submit("image", fail, **recorder.callbacks())

    assert recorder.event.wait(TIMEOUT)
    assert recorder.errors == ["cat.png: not an image Pillow can read"]


def test_error_message_formats() -> None:
    assert error_message(KeyError("features.99")) == "KeyError: 'features.99'"
    assert error_message(RuntimeError("")) == "RuntimeError"
    assert error_message(ImageError("x.jpg: no such file")) == "x.jpg: no such file"


def test_a_failing_job_does_not_stop_the_worker(runner: JobRunner) -> None:
    runner.submit("a", lambda context: 1 / 0)
    recorder = Recorder()
    runner.submit("b", lambda context: "still alive", **recorder.callbacks())

    assert recorder.event.wait(TIMEOUT)
    assert recorder.done == ["still alive"]


def test_progress_is_delivered(runner: JobRunner) -> None:
    def work(context: JobContext) -> str:
        for step in range(3):
            context.progress(step / 2, f"step {step}")
        return "done"

    recorder = Recorder()
    runner.submit("ascent", work, **recorder.callbacks())

    assert recorder.event.wait(TIMEOUT)
    assert recorder.progress == [(0.0, "step 0"), (0.5, "step 1"), (1.0, "step 2")]
    assert recorder.done == ["done"]


def test_cancel_stops_a_running_job_and_delivers_nothing(runner: JobRunner) -> None:
    started, saw_cancel, recorder = threading.Event(), [], Recorder()
    runner.submit("maps", blocking_job(started, saw_cancel, "stale"), **recorder.callbacks())
    assert started.wait(TIMEOUT)

    runner.cancel("maps")

    assert runner.wait_idle(TIMEOUT)
    assert saw_cancel == [True]
    assert recorder.done == [] and recorder.errors == []


def test_a_cancelled_detached_job_frees_the_thread_at_once(runner: JobRunner) -> None:
    """A load stuck in a step that never checks the flag must not hold the next job up."""
    started, release, recorder, ran = threading.Event(), threading.Event(), Recorder(), []

    def stuck(context: JobContext) -> str:
        started.set()
        release.wait(TIMEOUT)          # e.g. building a big model: no cancel checks in here
        return "late"

    runner.submit("model", stuck, detach_on_cancel=True, **recorder.callbacks())
    assert started.wait(TIMEOUT)
    runner.cancel("model")
    runner.submit("maps", lambda context: ran.append("maps"))

    assert runner.wait_idle(1.0)       # well before the stuck work ends
    assert ran == ["maps"]
    release.set()
    assert not recorder.event.wait(0.3)
    assert recorder.done == recorder.errors == []


def test_a_detached_job_delivers_its_result_and_errors(runner: JobRunner) -> None:
    recorder = Recorder()
    runner.submit("model", lambda context: context.progress(0.5, "half") or "built", detach_on_cancel=True,
                  **recorder.callbacks())
    assert recorder.event.wait(TIMEOUT)
    assert recorder.done == ["built"] and recorder.progress == [(0.5, "half")]
    failing = Recorder()
    runner.submit("model", lambda context: 1 / 0, detach_on_cancel=True, **failing.callbacks())
    assert failing.event.wait(TIMEOUT)
    assert failing.errors and "division" in failing.errors[0]


def test_cancel_drops_a_pending_job(runner: JobRunner) -> None:
    started, release, ran = threading.Event(), threading.Event(), []
    runner.submit("hold", lambda context: (started.set(), release.wait(TIMEOUT)))
    assert started.wait(TIMEOUT)
    runner.submit("maps", lambda context: ran.append("maps"))

    runner.cancel("maps")
    release.set()

    assert runner.wait_idle(TIMEOUT)
    assert ran == []


def test_cancelled_progress_raises_and_delivers_nothing(runner: JobRunner) -> None:
    started, reached_end, recorder = threading.Event(), [], Recorder()

    def work(context: JobContext) -> str:
        started.set()
        context.cancel.wait(TIMEOUT)
        context.progress(0.5, "after cancel")     # raises Cancelled
        reached_end.append(True)
        return "unreachable"

    runner.submit("ascent", work, **recorder.callbacks())
    assert started.wait(TIMEOUT)
    runner.cancel("ascent")

    assert runner.wait_idle(TIMEOUT)
    assert reached_end == [] and recorder.done == recorder.errors == recorder.progress == []


def test_context_check() -> None:
    context = JobContext()
    context.check()
    context.cancel.set()
    with pytest.raises(Cancelled):
        context.check()


def test_wait_idle_and_is_busy(runner: JobRunner) -> None:
    assert runner.wait_idle(TIMEOUT) and not runner.is_busy()
    started, release = threading.Event(), threading.Event()
    runner.submit("hold", lambda context: (started.set(), release.wait(TIMEOUT)))
    assert started.wait(TIMEOUT)

    assert runner.is_busy()
    assert runner.wait_idle(0.05) is False
    release.set()
    assert runner.wait_idle(TIMEOUT) and not runner.is_busy()


def test_close_cancels_and_stops_the_thread() -> None:
    runner = JobRunner(torch_threads=None)
    started, saw_cancel, recorder = threading.Event(), [], Recorder()
    workers: list[threading.Thread] = []

    def work(context: JobContext) -> str:
        workers.append(threading.current_thread())
        return blocking_job(started, saw_cancel, "late")(context)

    runner.submit("maps", work, **recorder.callbacks())
    assert started.wait(TIMEOUT)

    runner.close()

    assert not workers[0].is_alive()
    assert saw_cancel == [True] and recorder.done == []
    assert not runner.is_current("maps", 1)


# --------------------------------------------------------------------------- Session

@pytest.fixture
def session() -> Session:
    return Session()


def collect(signal) -> list:
    received: list = []
    signal.connect(received.append)
    return received


def test_select_emits_only_on_real_change(session: Session) -> None:
    changes = collect(session.selection_changed)

    session.select(layer="features.3")
    session.select(layer="features.3")
    session.select(channel=7)
    session.select(channel=7)
    session.select()

    assert changes == [Selection("features.3"), Selection("features.3", 7)]
    assert session.selection == Selection("features.3", 7)


def test_new_layer_resets_channel_and_neuron(session: Session) -> None:
    session.select(layer="a", channel=3, neuron=(1, 2))
    changes = collect(session.selection_changed)

    session.select(layer="a", channel=4)          # same layer: neuron kept
    session.select(layer="b")

    assert changes == [Selection("a", 4, (1, 2)), Selection("b")]


def test_new_layer_with_explicit_channel(session: Session) -> None:
    session.select(layer="a", channel=3, neuron=(1, 2))
    session.select(layer="b", channel=9)
    assert session.selection == Selection("b", 9, None)


def test_set_model_keeps_a_layer_the_new_model_has(session: Session) -> None:
    first = SimpleNamespace(layer_names=("", "conv1", "layer1"))
    second = SimpleNamespace(layer_names=("", "conv1", "fc"))
    session.set_model(first)
    session.select(layer="conv1", channel=5, neuron=(3, 4))
    models, changes = collect(session.model_changed), collect(session.selection_changed)

    session.set_model(second)

    assert models == [second] and session.model is second
    assert session.selection == Selection("conv1", 5, None)
    assert changes == [Selection("conv1", 5, None)]


def test_set_model_drops_a_layer_the_new_model_lacks(session: Session) -> None:
    session.set_model(SimpleNamespace(layer_names=("", "layer1")))
    session.select(layer="layer1", channel=2)
    changes = collect(session.selection_changed)

    session.set_model(SimpleNamespace(layer_names=("", "features")))

    assert session.selection == Selection()
    assert changes == [Selection()]


def test_model_changed_comes_before_selection_changed(session: Session) -> None:
    session.set_model(SimpleNamespace(layer_names=("", "a")))
    session.select(layer="a")
    order: list[str] = []
    session.model_changed.connect(lambda model: order.append("model"))
    session.selection_changed.connect(lambda selection: order.append("selection"))

    session.set_model(SimpleNamespace(layer_names=("",)))

    assert order == ["model", "selection"]


def test_set_image_emits_once_per_new_image(session: Session) -> None:
    images = collect(session.image_changed)
    first, second = object(), object()

    session.set_image(first)
    session.set_image(first)
    session.set_image(second)

    assert images == [first, second]
    assert session.image is second


def test_a_raising_callback_does_not_kill_the_worker(runner: JobRunner) -> None:
    def broken_on_done(result: object) -> None:
        raise RuntimeError("panel already closed")

    runner.submit("maps", lambda context: 1, on_done=broken_on_done)
    recorder = Recorder()
    runner.submit("filters", lambda context: 2, **recorder.callbacks())

    assert recorder.event.wait(2.0), "worker thread died with the callback's exception"
    assert recorder.done == [2]
    assert runner.wait_idle(TIMEOUT)


def test_a_new_image_forgets_the_region_but_keeps_the_class(session: Session) -> None:
    """A region is a part of the old picture: on a new one it would explain an arbitrary patch."""
    session.set_image(object())
    session.select(class_index=967, region=(0.1, 0.2, 0.3, 0.4))
    selections = collect(session.selection_changed)
    session.set_image(object())
    assert session.selection.region is None and session.selection.class_index == 967
    assert len(selections) == 1
