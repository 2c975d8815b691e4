"""Live segmentation: the whole pipeline against the bare segmenter, and UI stalls while it runs.

Runs the real Live panel offscreen, segmentation task, on a 640x480 video of the moving astronaut
(encoded here with PyAV), for LR-ASPP MobileNetV3-Large (random initialisation: no VOC weights
offline; its cost does not depend on them; short side 320) and the fully convolutional MobileNetV2
(real ImageNet weights; longer side 448):

1. pipeline frames/s (decode → segmenter thread → class map, legend → blend on the canvas) ÷ the
   segmenter's raw frames/s (`segment` in a loop, same frames, same one torch thread), interleaved
   rounds; the median of each round's ratio (the machine's load drifts between rounds; a round's
   two measurements are seconds apart); target >= 0.9;
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
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CNNVIEWER_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from bench_live import Run  # noqa: E402  - the panel-driving loop and UI-timer gaps, shared
from cnnviewer.engine.media.sources import open_source  # noqa: E402
from cnnviewer.engine.segmentation.live import make_segmenter  # noqa: E402
from cnnviewer.engine.session import Session  # noqa: E402
from cnnviewer.ui.jobs import UiJobs  # noqa: E402
from cnnviewer.ui.panels.live_detection import LiveDetectionPanel  # noqa: E402
from tests.media import astronaut_frame, write_video  # noqa: E402

SEGMENTERS = ("lraspp_mobilenet_v3_large", "mobilenet_v2 (fully convolutional)")


def raw_fps(segmenter, frames: list[np.ndarray]) -> float:
    segmenter.segment(frames[0])
    start = time.perf_counter()
    for pixels in frames:
        segmenter.segment(pixels)
    return len(frames) / (time.perf_counter() - start)


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
    for name in args.models:
        panel = LiveDetectionPanel(Session(), UiJobs(JobRunner()), controller=None)
        panel.task.setCurrentText("Segmentation")
        panel.segmentation.model.setCurrentText(name)
        run = Run(app, panel)
        run.play(open_source(video), 3)                      # builds the segmenter, warms up
        segmenter = make_segmenter(name)                      # the bare one, built once, as the pipeline's
        raws, pipes, ratios, stalls = [], [], [], []
        for _ in range(args.rounds):
            raws.append(raw_fps(segmenter, decoded))
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
