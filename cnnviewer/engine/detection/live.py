"""The live detection pipeline: source → newest frame → detector → result callback.

Two threads, Qt-free: a reader plays a file source (at its frame rate, or as
fast as the detector takes frames), and the detector thread always takes the
newest frame. At most one frame waits; older ones are dropped, so no queue
grows and every result carries its frame's capture time. Cameras push frames
in with `offer` instead of a reader.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cnnviewer.engine.detection.overlay import Detection
from cnnviewer.engine.errors import CnnViewerError, describe
from cnnviewer.engine.media.sources import Frame, FrameSource

TRACE_RETRIES = 5      # runs of one frame made again after another thread's fx trace broke them
TRACE_WAIT_S = 10.0    # longest wait for such a trace to end before its error is reported

if TYPE_CHECKING:   # torch and the detectors load on the detector thread, never the GUI's
    from cnnviewer.engine.detection.detectors import Detector
    from cnnviewer.engine.segmentation.live_scene import LiveClassMap


@dataclass(frozen=True, eq=False)
class LiveResult:
    """One frame's raw detections (before the user's thresholds), or its class map (a segmenter)."""

    frame: Frame
    raw: list[Detection]
    detector: Detector
    detect_ms: float
    internals: dict = field(default_factory=dict)   # e.g. RPN proposals and anchor grids
    segmentation: LiveClassMap | None = None       # numpy only: the window's thread draws it


class LatestFrame:
    """A one-frame slot: `put` replaces what waits (or, lossless, waits for it to be taken)."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._closed = False
        self._busy = False         # a taken frame is still being worked on (until `done`)
        self._changed = threading.Condition()

    def put(self, frame: Frame, lossless: bool = False) -> None:
        with self._changed:
            while lossless and self._frame is not None and not self._closed:
                self._changed.wait(0.1)
            self._frame = frame
            self._changed.notify_all()

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, waiting up to `timeout`; None if none came or the slot closed."""
        with self._changed:
            if self._frame is None and not self._closed:
                self._changed.wait(timeout)
            frame, self._frame = self._frame, None
            self._busy = frame is not None
            self._changed.notify_all()
            return frame

    def done(self) -> None:
        """The frame last taken has been dealt with (its result, or its error, is out)."""
        with self._changed:
            self._busy = False
            self._changed.notify_all()

    def wait_drained(self, stop: threading.Event) -> None:
        """Wait until no frame waits and none is being worked on (or the slot closes, or `stop`)."""
        with self._changed:
            while (self._frame is not None or self._busy) and not self._closed and not stop.is_set():
                self._changed.wait(0.05)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def reopen(self) -> None:
        with self._changed:
            self._closed, self._frame = False, None


class LivePipeline:
    """Runs a detector over the newest frame on its own thread.

    Callbacks run on the pipeline's threads: the UI wraps them to reach its own
    thread. `on_result(LiveResult)`, `on_error(message)`, `on_end()` (the file
    source ran out), `on_status(message)` (e.g. a detector is loading).
    """

    def __init__(self, on_result: Callable[[LiveResult], None], *,
                 on_error: Callable[[str], None] = lambda _m: None,
                 on_end: Callable[[], None] = lambda: None,
                 on_status: Callable[[str], None] = lambda _m: None,
                 device: str | None = None, torch_threads: int | None = 1) -> None:
        self._on_result, self._on_error, self._on_end, self._on_status = on_result, on_error, on_end, on_status
        self._device, self._torch_threads = device, torch_threads
        self._device_name: str | None = None   # the device picked, on the detector thread
        self._slot = LatestFrame()
        self._detector: Detector | None = None
        self._wanted: tuple[str, str | None] = ("mtcnn", None)
        self._failed: tuple[str, str | None] | None = None
        self._built: tuple[str, str | None] | None = None
        self._lock = threading.Lock()
        self._source: FrameSource | None = None
        self._reader: threading.Thread | None = None
        self._stop_reading = threading.Event()
        self._playing = threading.Event()
        self._playing.set()
        self._steps = 0
        self._seek_to: int | None = None
        self.loop = False          # a file source starts again at its end
        self._realtime = True
        self._closed = False
        self._thread = threading.Thread(target=self._detect_loop, name="cnnviewer-detect", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ control
    def set_detector(self, name: str, weights: str | None = None) -> None:
        """Use this detector (with custom weights, if given) from the next frame on.

        It is built on the detector thread; if that fails the previous one stays if it does the same
        task (detection or segmentation), else none runs until a model that loads is chosen.
        """
        with self._lock:
            self._wanted, self._failed = (name, weights), None

    def offer(self, frame: Frame) -> None:
        """A pushed frame (camera): it replaces any frame still waiting."""
        self._slot.put(frame)

    def play(self, source: FrameSource, realtime: bool = True) -> None:
        """Read `source` on a reader thread: at its frame rate, or (not realtime) every frame."""
        self.stop_source()
        with self._lock:
            self._seek_to = None
        self._source = source
        self._start_reader(source, realtime)

    def stop_source(self) -> None:
        """Stop reading the current file source (the last result stays with the caller)."""
        self._stop_reading.set()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        if self._source is not None:
            self._source.close()
        self._source = self._reader = None

    def pause(self, paused: bool) -> None:
        if paused:
            self._playing.clear()
        else:
            self._playing.set()

    @property
    def paused(self) -> bool:
        return not self._playing.is_set()

    def step(self) -> None:
        """Read one frame of a paused file source; a reader that had ended is started again, so a
        Step after the end (e.g. once Loop is ticked) reads on instead of doing nothing forever."""
        with self._lock:
            self._steps += 1
        self._restart_ended_reader()

    def seek(self, index: int) -> None:
        """Show frame `index` of the file source next (also when paused); replays an ended source."""
        with self._lock:
            self._seek_to = index
            if self.paused:   # playing, the reader shows it anyway: a step would be left over for a later pause
                self._steps += 1
        self._restart_ended_reader()

    def _restart_ended_reader(self) -> None:
        source = self._source
        if source is not None and (self._reader is None or not self._reader.is_alive()):
            self._start_reader(source, self._realtime)   # the source had ended: read it again

    def _start_reader(self, source: FrameSource, realtime: bool) -> None:
        self._stop_reading, self._realtime = threading.Event(), realtime
        self._reader = threading.Thread(target=self._read_loop, args=(source, realtime, self._stop_reading),
                                        name="cnnviewer-frames", daemon=True)
        self._reader.start()

    def close(self) -> None:
        self._closed = True
        self._slot.close()      # first: a lossless reader waiting for the (now ending) detector thread
        self.stop_source()      # to take its frame returns at once, rather than after join's 5 s
        self._thread.join(timeout=10)

    # ------------------------------------------------------------ threads
    def _read_loop(self, source: FrameSource, realtime: bool, stop: threading.Event) -> None:
        started, played = time.perf_counter(), 0
        while not stop.is_set():
            stepping = False
            with self._lock:
                seek_to, self._seek_to = self._seek_to, None
            if seek_to is not None:
                try:
                    source.seek(seek_to)
                except CnnViewerError as error:
                    self._on_error(str(error))
                started, played = time.perf_counter(), 0
            if not self._playing.is_set():
                with self._lock:
                    stepping = self._steps > 0
                    self._steps = max(0, self._steps - 1)
                if not stepping:
                    time.sleep(0.02)
                    started, played = time.perf_counter(), 0
                    continue
            try:
                frame = source.read()
            except CnnViewerError as error:
                self._on_error(str(error))
                continue
            except Exception as error:   # a decoder failing in an unexpected way ends the stream
                self._on_error(f"{source.name}: {describe(error)}")
                break
            if frame is None:
                if self.loop and source.length:
                    try:
                        source.seek(0)
                    except CnnViewerError as error:
                        self._on_error(str(error))
                        break
                    if stepping:   # a Step at the end of a looping video shows its first frame, not nothing
                        with self._lock:
                            self._steps += 1
                    started, played = time.perf_counter(), 0
                    continue
                if self._asked_while_ending(stop):   # a Step or seek came as this reader was ending
                    continue
                break
            if realtime and self._playing.is_set():
                due = started + played / max(source.fps, 1e-3)
                played += 1
                wait = due - time.perf_counter()
                if wait > 0:
                    stop.wait(wait)
                elif wait < -0.5:          # far behind (e.g. after a slow frame): resynchronise
                    started, played = time.perf_counter(), 0
                frame = Frame(frame.index, frame.name, frame.pixels, time.perf_counter())
            self._slot.put(frame, lossless=not realtime)
        self._slot.wait_drained(stop)   # "ended" once the last frame's result is out, not when it was read
        if not stop.is_set():
            self._on_end()

    def _asked_while_ending(self, stop: threading.Event) -> bool:
        """At the end of the source, once the last frame's result is out: whether a seek, or a Step
        while paused, arrived meanwhile (`step` saw this reader alive, so it did not start another)."""
        self._slot.wait_drained(stop)
        with self._lock:
            return not stop.is_set() and (self._seek_to is not None or (self._steps > 0 and self.paused))

    def _detect_loop(self) -> None:
        import torch

        from cnnviewer.engine.runtime.allocator import keep_freed_memory

        keep_freed_memory()   # no page faults re-mapping each frame's activations (allocator.py)
        if self._torch_threads:
            torch.set_num_threads(self._torch_threads)
        while not self._closed:
            frame = self._slot.take(timeout=0.2)
            if frame is None:
                continue
            try:
                self._work_on(frame)
            finally:
                self._slot.done()

    def _drop_other_task(self, wanted: str) -> str:
        """After `wanted` failed to build: drop the previous model if it does the other task (boxes drawn
        while the panel is set to segmentation, or the reverse); what the error message adds then."""
        from cnnviewer.engine.segmentation.live import Segmenter, is_segmenter

        previous = self._detector
        if previous is None or isinstance(previous, Segmenter) == is_segmenter(wanted):
            return ""
        self._detector, self._built = None, None
        return (f"; {previous.name} is stopped too (it {'segments' if isinstance(previous, Segmenter) else 'detects'}"
                "): nothing runs until a model that loads is chosen")

    def _work_on(self, frame: Frame) -> None:
        """Build the wanted detector if it changed, then run it on `frame` and hand the result on."""
        from cnnviewer.engine.segmentation.live import make_live_model
        from cnnviewer.engine.runtime.device import pick_device

        with self._lock:
            wanted = self._wanted
        if wanted != self._built and wanted != self._failed:
            self._on_status(f"Loading {wanted[0]}…")
            try:
                self._device_name = self._device_name or str(pick_device(self._device))
                self._detector = make_live_model(wanted[0], self._device_name, wanted[1])
                self._built = wanted
                self._on_status("")
            except Exception as error:   # keep the previous model if it does the same task, and say why (once)
                self._failed = wanted
                self._on_error(f"{wanted[0]}: {describe(error)}{self._drop_other_task(wanted[0])}")
        if self._detector is None:
            return
        try:
            started, raw, segmentation = self._run(self._detector, frame)
            detect_ms = (time.perf_counter() - started) * 1000
            self._on_result(LiveResult(frame, raw, self._detector, detect_ms, self._detector.internals(),
                                       segmentation))
        except Exception as error:   # keep running: the next frame or detector may work
            self._on_error(describe(error))

    def _run(self, detector: Detector, frame: Frame) -> tuple[float, list[Detection], LiveClassMap | None]:
        """(start time, detections, class map) of `detector` on `frame`. A run that another thread's
        torch.fx trace broke (fx patches nn.Module for the whole process: runtime/fx_traces.py) is made
        again once the trace is over: otherwise that frame, and a paused Step, showed nothing."""
        from cnnviewer.engine.runtime.fx_traces import broken_by_a_trace, wait_for_traces

        retries = TRACE_RETRIES
        while True:
            started = time.perf_counter()
            try:
                raw, segmentation = detector.run(frame.pixels)
                return started, raw, segmentation
            except Exception as error:
                if (not retries or not broken_by_a_trace(error)
                        or not wait_for_traces(TRACE_WAIT_S, stop=lambda: self._closed)):
                    raise
                retries -= 1
