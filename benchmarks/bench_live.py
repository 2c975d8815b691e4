"""Live detection: the whole pipeline against the bare detector, memory over long runs, UI stalls.

Runs the real Live detection panel offscreen on a 640x480 video of the moving
astronaut (encoded here with PyAV), for SSDlite320 (random initialisation: no
COCO weights offline; its cost does not depend on them) and MTCNN (real weights):

1. pipeline frames/s (decode → detector thread → thresholds/NMS → overlay on the
   canvas) ÷ the detector's raw frames/s (`raw` in a loop, same frames, same one
   torch thread), interleaved rounds; target >= 0.9;
2. longest gap of a 10 ms timer on the UI thread while the pipeline runs; target < 50 ms;
3. (--frames N) peak RSS after N frames ÷ after 100 frames; target <= 1.05.

    .venv/bin/python benchmarks/bench_live.py [--rounds 3] [--frames 5000] [--quick]

--quick (tests/test_benchmarks.py): 8 frames, one round, both detectors; no long run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CNNVIEWER_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QElapsedTimer, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from cnnviewer.engine.detection.detectors import make_detector  # noqa: E402
from cnnviewer.engine.media.sources import FrameSource, VideoFile, open_source  # noqa: E402
from cnnviewer.engine.session import Session  # noqa: E402
from cnnviewer.ui.jobs import UiJobs  # noqa: E402
from cnnviewer.ui.panels.live_detection import LiveDetectionPanel  # noqa: E402
from tests.media import astronaut_frame, write_video  # noqa: E402

DETECTORS = ("ssdlite320_mobilenet_v3_large", "mtcnn")


class Looping(FrameSource):
    """A video file played again and again (fresh decoding each time), for long runs."""

    def __init__(self, path: Path, total: int) -> None:
        self._path, self._total, self._count = path, total, 0
        self._video = VideoFile(path)
        self.name, self.fps = path.name, self._video.fps

    def read(self):
        if self._count >= self._total:
            return None
        frame = self._video.read()
        if frame is None:
            self._video.close()
            self._video = VideoFile(self._path)
            frame = self._video.read()
        self._count += 1
        return frame

    def close(self) -> None:
        self._video.close()


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def raw_fps(name: str, frames: list[np.ndarray]) -> float:
    detector = make_detector(name)
    detector.raw(frames[0])
    start = time.perf_counter()
    for pixels in frames:
        detector.raw(pixels)
    return len(frames) / (time.perf_counter() - start)


class Run:
    """The panel playing a source losslessly; counts shown frames and UI-timer gaps."""

    def __init__(self, app: QApplication, panel: LiveDetectionPanel) -> None:
        self.app, self.panel = app, panel
        self.gaps: list[float] = []
        self._clock = QElapsedTimer()
        self._timer = QTimer(interval=10)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.gaps.append(self._clock.restart())

    def play(self, source: FrameSource, count: int, on_frame=None) -> float:
        """Frames/s from the first shown frame to the `count`-th."""
        shown, times = [0], []

        def counting() -> None:
            shown[0] += 1
            times.append(time.perf_counter())
            if on_frame is not None:
                on_frame(shown[0])

        self.panel.frame_shown.connect(counting)
        self.gaps.clear()
        self._clock.start()
        self._timer.start()
        self.panel.pipeline.play(source, realtime=False)
        while shown[0] < count:
            self.app.processEvents()
            time.sleep(0.001)
        self._timer.stop()
        self.panel.frame_shown.disconnect(counting)
        return (len(times) - 1) / (times[-1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=40, help="frames per throughput measurement")
    parser.add_argument("--frames", type=int, default=0, help="long run for memory (e.g. 5000); 0 skips it")
    parser.add_argument("--detectors", nargs="*", default=list(DETECTORS))
    parser.add_argument("--quick", action="store_true", help="8 frames, 1 round, no long run")
    args = parser.parse_args()
    if args.quick:
        args.count, args.rounds, args.frames = 8, 1, 0
    torch.set_num_threads(1)
    app = QApplication.instance() or QApplication([])
    from cnnviewer.engine.jobs import JobRunner
    folder = Path(tempfile.mkdtemp(prefix="cnnviewer-bench-live-"))
    frames = [astronaut_frame(i)[0] for i in range(args.count)]
    video = write_video(folder / "clip.mp4", frames, fps=25)
    print(f"{len(frames)} frames 640x480, one torch thread, {torch.__version__}, CPU")
    for name in args.detectors:
        panel = LiveDetectionPanel(Session(), UiJobs(JobRunner()), controller=None)
        panel.detector.setCurrentText(name)
        run = Run(app, panel)
        run.play(open_source(video), 3)                      # builds the detector, warms up
        raws, pipes, stalls = [], [], []
        for _ in range(args.rounds):
            raws.append(raw_fps(name, frames))
            pipes.append(run.play(open_source(video), args.count))
            stalls.append(max(run.gaps[1:]) - 10)
        raw, pipe = statistics.median(raws), statistics.median(pipes)
        print(f"{name}: raw {raw:.1f} frames/s, pipeline {pipe:.1f} frames/s, ratio {pipe / raw:.3f} "
              f"(target >= 0.9); longest UI-timer stall {max(stalls):.0f} ms beyond its 10 ms (target < 50)")
        if args.frames:
            marks: dict[int, tuple[float, float]] = {}

            def mark(count: int) -> None:
                if count in (100, args.frames) or count % 1000 == 0:
                    marks[count] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_mib())

            started = time.perf_counter()
            run.play(Looping(video, args.frames + 5), args.frames, on_frame=mark)
            first, last = marks[100], marks[args.frames]
            trail = ", ".join(f"{k}: {v[1]:.0f}" for k, v in sorted(marks.items()))
            print(f"{name}: peak RSS after 100 frames {first[0]:.0f} MiB, after {args.frames} {last[0]:.0f} MiB, "
                  f"ratio {last[0] / first[0]:.3f} (target <= 1.05); current RSS MiB by frame {trail}; "
                  f"{time.perf_counter() - started:.0f} s")
        panel.shutdown()


if __name__ == "__main__":
    main()
