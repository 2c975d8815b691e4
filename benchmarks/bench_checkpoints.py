"""A training run's checkpoints: slider to an adjacent checkpoint until every visible panel is redrawn.

The real main window (offscreen unless DISPLAY and QT_QPA_PLATFORM say otherwise), its default panel
layout, the real ImageNet MobileNetV2 and the chelsea photo, one torch thread. A series of N
checkpoints of it (parameters perturbed progressively, written with torch.save) is opened; then,
side by side and interleaved:
  cold  the strip moves to the adjacent checkpoint, never visited (read + fitted + every panel);
  warm  the strip moves back to a checkpoint still in the series' cache (every panel only);
  plain File > Load weights of the same file (what a user did before: a full reload).
Each is timed from the call to the moment no job is pending or running, no result is waiting for
the GUI thread and the window has painted (every visible panel has drawn the new checkpoint).
Goal: cold adjacent <= 0.5 s on this CPU.

    .venv/bin/python benchmarks/bench_checkpoints.py [--checkpoints 8] [--quick]

Cold moves into a module of their own (the first few: the series keeps 4) trace it for the
recorder; once the cache is full, a checkpoint is copied into the module of the one it evicts, whose
recorder is already traced: both are printed.

--quick (tests/test_benchmarks.py): 3 checkpoints, two moves of each kind; figures are indicative only.
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
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from bench_stalls import idle, wait_until  # noqa: E402 - after the path and the platform are set
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

GOAL_S = 0.5


def write_series(folder: Path, count: int) -> None:
    """`count` checkpoints of the real MobileNetV2, each parameter moved a little further (Lightning names)."""
    import torch

    from cnnviewer.engine.models.loading import load_model
    model = load_model("mobilenet_v2")
    params = dict(model.module.named_parameters())
    state = model.module.state_dict()
    generator = torch.Generator().manual_seed(0)
    noise = {k: torch.randn(v.shape, generator=generator) * 0.01 * float(v.std()) if k in params and v.numel() > 1
             else None for k, v in state.items()}
    for k in range(count):
        moved = {key: value + k * noise[key] if noise[key] is not None else value for key, value in state.items()}
        torch.save({"state_dict": moved, "epoch": k, "global_step": 500 * k}, folder / f"epoch={k}-step={500 * k}.ckpt")


def redrawn(window, app, condition) -> float:
    """Seconds until `condition` holds, the engine is idle and the window painted."""
    start = time.perf_counter()
    wait_until(lambda: condition() and idle(window), timeout_s=120)
    window.repaint()
    app.processEvents()
    return time.perf_counter() - start


def engine_alone(folder: Path, reps: int) -> tuple[list[float], list[float], list[float]]:
    """Reading + fitting one checkpoint without the window: the series' way (a copy of the fitted
    module + load_state_dict), File > Load weights' way (load_weights: a new module built), and
    torch.load alone (the file's share)."""
    import torch

    from cnnviewer.engine.models.checkpoints import CheckpointSeries, list_checkpoints
    from cnnviewer.engine.models.loading import load_model, load_weights
    base = load_model("mobilenet_v2")
    listed = list_checkpoints(folder)
    fit, plain, read = [], [], []
    for rep in range(reps):
        series = CheckpointSeries(folder, listed, base)
        series.model(0)
        k = 1 + rep % (len(listed) - 1)
        start = time.perf_counter()
        series.model(k)
        fit.append(time.perf_counter() - start)
        start = time.perf_counter()
        load_weights(listed[k].path, base)
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.load(listed[k].path, map_location="cpu", weights_only=True)
        read.append(time.perf_counter() - start)
    return fit, plain, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="3 checkpoints, one move of each kind")
    args = parser.parse_args()
    count = 3 if args.quick else max(args.checkpoints, 3)
    import torch
    torch.set_num_threads(1)
    from cnnviewer.engine.jobs import JobRunner
    from cnnviewer.engine.session import Session
    from cnnviewer.ui.controller import Controller
    from cnnviewer.ui.jobs import UiJobs
    from cnnviewer.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        folder.mkdir()
        write_series(folder, count)
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        session = Session()
        jobs = UiJobs(JobRunner(torch_threads=1))
        controller = Controller(session, jobs)
        window = MainWindow(session, jobs, controller, settings)
        window.resize(1400, 880)
        window.show()
        controller.load_model("mobilenet_v2")
        controller.open_sample("chelsea")
        wait_until(lambda: bool(window.predictions.predictions) and idle(window), timeout_s=180, hold_s=0.3)
        visible = [key for key, dock in window.docks.items() if dock.isVisible() and not dock.visibleRegion().isEmpty()]
        browser, bar = window.checkpoints, window.checkpoint_bar
        window.open_checkpoints(folder)
        wait_until(lambda: browser.index == count - 1 and idle(window), timeout_s=120, hold_s=0.3)
        session.select(layer="features.3", channel=5)
        wait_until(lambda: idle(window), hold_s=0.3)
        cold, warm, plain, modules = {"new": [], "reused": []}, [], [], {id(session.model.module)}
        steps = list(reversed(range(count - 1)))[: 2 if args.quick else None]   # count-1 is shown: down, a new one each
        for k in steps:
            bar.slider.setValue(k)
            seconds = redrawn(window, app, lambda k=k: browser.index == k and session.forward is not None)
            cold["reused" if id(session.model.module) in modules else "new"].append(seconds)
            modules.add(id(session.model.module))
            bar.slider.setValue(k + 1)                # back to the previous one: cached
            warm.append(redrawn(window, app, lambda k=k: browser.index == k + 1 and session.forward is not None))
            bar.slider.setValue(k)
            redrawn(window, app, lambda k=k: browser.index == k and session.forward is not None)
        paths = [browser.checkpoints[k].path for k in steps]
        for path in paths:                            # the same files, loaded as before this feature
            before = session.model
            window.load_weights(path)
            plain.append(redrawn(window, app, lambda b=before: session.model is not b and session.forward is not None))
        selection = session.selection
        jobs.runner.close()
        window.close()
        fit, plain_fit, read = engine_alone(folder, 3 if args.quick else 9)
    print(f"mobilenet_v2, {count} checkpoints, 1 torch thread, visible panels: {', '.join(visible)}")
    print(f"selection kept: layer {selection.layer}, channel {selection.channel}")
    print(f"{'move':<40}{'median s':>6}{'max s':>8}{'n':>4}")
    every_cold = cold["new"] + cold["reused"]
    for name, values in (("slider to adjacent, cold (first visit)", every_cold),
                         ("  of which into a new module (traced)", cold["new"]),
                         ("  of which into an evicted one's module", cold["reused"]),
                         ("slider to adjacent, warm (cached)", warm), ("plain reload of the same weights", plain)):
        if values:
            print(f"{name:<40}{statistics.median(values):>6.3f}{max(values):>8.3f}{len(values):>4}")
    cold = every_cold
    print(f"engine alone, one checkpoint: series read + fit {statistics.median(fit) * 1000:.0f} ms, "
          f"load_weights {statistics.median(plain_fit) * 1000:.0f} ms (ratio {statistics.median(fit) / statistics.median(plain_fit):.2f}), "
          f"of which torch.load {statistics.median(read) * 1000:.0f} ms")
    ratio = statistics.median(cold) / statistics.median(plain)
    verdict = "PASS" if statistics.median(cold) <= GOAL_S else "FAIL"
    print(f"cold / plain reload ratio {ratio:.2f}   warm / plain ratio {statistics.median(warm) / statistics.median(plain):.2f}"
          f"   cold median {statistics.median(cold):.3f} s <= {GOAL_S} s: {verdict}")


if __name__ == "__main__":
    main()
