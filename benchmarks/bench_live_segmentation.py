"""Live segmentation: the whole pipeline against the bare segmenter, and UI stalls while it runs.

Runs the real Live panel offscreen, segmentation task, on a 640x480 video of the moving astronaut
(encoded here with PyAV), for LR-ASPP MobileNetV3-Large (random initialisation: no VOC weights
offline; its cost does not depend on them; short side 320) and the fully convolutional MobileNetV2
(real ImageNet weights; longer side 448):

1. pipeline frames/s (decode → segmenter thread → class map, legend → blend on the canvas) ÷ the
   segmenter's raw frames/s (`segment` in a loop, same frames, same one torch thread), interleaved
   rounds; the median of each round's ratio (the machine's load drifts between rounds; a round's
   two measurements are seconds apart); target >= 0.9. Both sides are timed alike: on a worker
   thread with one torch thread (the main thread's allocator faults in more pages: 5-10 % slower),
   the same weights, every frame of the clip (the pipeline plays it losslessly), the clock running
   from frame 0's result to frame N-1's (N-1 frames); and each measurement runs alone (the pipeline
   has finished the whole clip, and no result of an earlier clip is counted, before the next starts);
2. longest gap of a 10 ms timer on the UI thread while the pipeline runs; target < 50 ms.

    .venv/bin/python benchmarks/bench_live_segmentation.py [--rounds 5] [--count 30] [--quick]

--quick (tests/test_benchmarks.py): 6 frames, one round, both models.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CNNVIEWER_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QEventLoop  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from bench_live import Run  # noqa: E402  - the panel-driving loop and UI-timer gaps, shared
from cnnviewer.engine.media.sources import open_source  # noqa: E402
from cnnviewer.engine.segmentation.live import make_segmenter  # noqa: E402
from cnnviewer.engine.session import Session  # noqa: E402
from cnnviewer.ui.jobs import UiJobs  # noqa: E402
from cnnviewer.ui.panels.live_detection import LiveDetectionPanel  # noqa: E402
from tests.media import astronaut_frame, write_video  # noqa: E402

SEGMENTERS = ("lraspp_mobilenet_v3_large", "mobilenet_v2 (fully convolutional)")


def raw_fps(worker: ThreadPoolExecutor, segmenter, frames: list[np.ndarray]) -> float:
    """The bare segmenter over `frames` on `worker` (one torch thread, as the pipeline's segmenter
    thread): frame 0 first, then frames/s over the other N-1, as `Whole.play` counts the pipeline."""
    def loop() -> float:
        segmenter.segment(frames[0])
        start = time.perf_counter()
        for pixels in frames[1:]:
            segmenter.segment(pixels)
        return (len(frames) - 1) / (time.perf_counter() - start)

    return worker.submit(loop).result()


class Whole(Run):
    """Run, but over a whole clip: only this clip's frames count, and it returns once the last one
    is shown, so the pipeline is idle (nothing of it overlaps the next measurement)."""

    def play(self, source, count: int, on_frame=None) -> float:
        """Frames/s from frame 0's result shown to frame `count`-1's (`count` = the clip's length)."""
        started, shown = time.perf_counter(), {}

        def counting() -> None:
            frame = self.panel.frame
            if frame.captured >= started:             # not a result of the clip played before
                shown.setdefault(frame.index, time.perf_counter())

        self.app.processEvents()
        self.panel.frame_shown.connect(counting)
        self.gaps.clear()
        self._clock.start()
        self._timer.start()
        self.panel.pipeline.play(source, realtime=False)   # lossless: the segmenter gets every frame
        while count - 1 not in shown:   # sleeps until an event comes (the 10 ms timer's, at the latest),
            self.app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)   # as the app's loop does
        self._timer.stop()
        self.panel.frame_shown.disconnect(counting)
        self.panel.pipeline.stop_source()              # its reader has ended: the slot is drained
        first = min(shown)
        return (count - 1 - first) / (shown[count - 1] - shown[first])   # frames segmented in between


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=30, help="frames per throughput measurement")
    parser.add_argument("--models", nargs="*", default=list(SEGMENTERS))
    parser.add_argument("--quick", action="store_true", help="6 frames, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.count, args.rounds = 6, 1
    torch.set_num_threads(1)
    app = QApplication.instance() or QApplication([])
    from cnnviewer.engine.jobs import JobRunner
    folder = Path(tempfile.mkdtemp(prefix="cnnviewer-bench-liveseg-"))
    frames = [astronaut_frame(i)[0] for i in range(args.count)]
    video = write_video(folder / "clip.mp4", frames, fps=25)
    decoded = [frame.pixels for frame in open_source(video)]        # what the pipeline's reader hands on
    print(f"{len(frames)} frames 640x480, one torch thread, {torch.__version__}, CPU")
    worker = ThreadPoolExecutor(1, "bench-raw", initializer=torch.set_num_threads, initargs=(1,))
    for name in args.models:
        panel = LiveDetectionPanel(Session(), UiJobs(JobRunner()), controller=None)
        panel.task.setCurrentText("Segmentation")
        panel.segmentation.model.setCurrentText(name)
        run = Whole(app, panel)
        torch.manual_seed(0)
        segmenter = make_segmenter(name)                      # the bare one, built once, as the pipeline's
        torch.manual_seed(0)                                  # the same random weights (LR-ASPP) for both
        run.play(open_source(video), args.count)             # builds the segmenter, warms up; the whole clip
        raws, pipes, ratios, stalls = [], [], [], []
        for _ in range(args.rounds):
            raws.append(raw_fps(worker, segmenter, decoded))
            pipes.append(run.play(open_source(video), args.count))
            ratios.append(pipes[-1] / raws[-1])
            stalls.append(max(run.gaps[1:]) - 10)
        raw, pipe, ratio = statistics.median(raws), statistics.median(pipes), statistics.median(ratios)
        verdict = "PASS" if ratio >= 0.9 and max(stalls) < 50 else "FAIL"
        print(f"{name}: raw {raw:.1f} frames/s, pipeline {pipe:.1f} frames/s, ratio {ratio:.3f} "
              f"(target >= 0.9); longest UI-timer stall {max(stalls):.0f} ms beyond its 10 ms (target < 50) "
              f"{verdict}")
        panel.shutdown()


if __name__ == "__main__":
    main()
