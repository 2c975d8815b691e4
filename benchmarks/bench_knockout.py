"""Knock-outs: a forward pass of the intervened model ÷ the plain forward, side by side.

Real ImageNet MobileNetV2 at 224 px, one torch thread, interleaved repetitions, medians. Three
interventions: 2 channels of one conv, half of a residual block's channels (a non-leaf module),
and 5 layers at once; for each, the plain forward (model(x)) and the app's recorded forward
(every module's output, the torch.fx recorder). Goal: ratio <= 1.1.

    .venv/bin/python benchmarks/bench_knockout.py [--reps 31] [--quick]

--quick (tests/test_benchmarks.py): 112 px, 3 repetitions, the same calls and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cnnviewer.engine.experiments.knockout import Knockout, intervene
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.memory import keep_freed_memory
from cnnviewer.engine.runtime.recording import capture_activations

CASES = {
    "conv 2 channels": [Knockout("features.14.conv.0.0", (3, 7))],
    "block 80 channels": [Knockout("features.14", tuple(range(0, 160, 2)))],
    "5 layers": [Knockout("features.2.conv.0", (1,)), Knockout("features.7", (0, 5), "scale", factor=0.5),
                 Knockout("features.10.conv.1", (3,), "mean", means=(0.1,)), Knockout("features.16", (9,)),
                 Knockout("features.18", tuple(range(64)))],
}


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=31)
    parser.add_argument("--quick", action="store_true", help="112 px, 3 repetitions: a few seconds")
    args = parser.parse_args()
    reps, size = (3, 112) if args.quick else (args.reps, 224)
    keep_freed_memory()
    torch.set_num_threads(1)
    model = load_model("mobilenet_v2", device="cpu")
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size)
    print(f"mobilenet_v2 ({'real weights' if model.trained else 'UNTRAINED'}), 1 torch thread, {size} px, "
          f"{reps} interleaved repetitions, medians")
    print(f"{'intervention':<20}{'plain ms':>10}{'knocked ms':>12}{'ratio':>7}{'rec. ms':>10}{'rec.+ko ms':>12}"
          f"{'ratio':>7}  verdict (<= 1.1)")
    for name, knockouts in CASES.items():
        knocked = intervene(model, knockouts)
        runs = {"plain": lambda: model.module(x), "knocked": lambda k=knocked: k.module(x),
                "recorded": lambda: capture_activations(model.module, x),
                "recorded+ko": lambda k=knocked: capture_activations(k.module, x)}
        times: dict[str, list[float]] = {key: [] for key in runs}
        with torch.inference_mode():
            for run in runs.values():      # warm: traces the recorders once
                run()
                run()
            for _ in range(reps):
                for key, run in runs.items():
                    times[key].append(timed(run))
        ms = {key: statistics.median(values) * 1000 for key, values in times.items()}
        plain, recorded = ms["knocked"] / ms["plain"], ms["recorded+ko"] / ms["recorded"]
        verdict = "PASS" if max(plain, recorded) <= 1.1 else "FAIL"
        print(f"{name:<20}{ms['plain']:10.1f}{ms['knocked']:12.1f}{plain:7.3f}{ms['recorded']:10.1f}"
              f"{ms['recorded+ko']:12.1f}{recorded:7.3f}  {verdict}")


if __name__ == "__main__":
    main()
