"""Equivariance probe: its cost against the plain forward passes it needs, side by side.

One torch thread (the app's job thread), the real ImageNet MobileNetV2 (offline weights) on the cat:
probe(shift, 8 amounts, every layer: 151 outputs, each compared per amount) ÷ eight plain forwards of
the same eight shifted crops, one at a time; target <= 2 (issue 24). The probe runs nine images (the
original too) in batches of four with streaming hooks, and takes per output: the pooled mean, the raw-map
cosine (a dot product and a norm) and, per whole-step amount, the interior difference norm. Every
statistic is a pass over memory, so they cost about as much as the forward itself; the second line
is the same probe without the raw-map cosine.

    .venv/bin/python benchmarks/bench_probe.py [--reps 7] [--quick]

--quick (tests/test_benchmarks.py): 2 repetitions, the same calls and ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from cnnviewer.engine.experiments.equivariance import probe, transformed_inputs
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.memory import keep_freed_memory
from cnnviewer.engine.structure.summary_graph import summarize


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2 repetitions: a few seconds")
    args = parser.parse_args()
    reps = 2 if args.quick else args.reps
    keep_freed_memory()
    torch.set_num_threads(1)
    model, image = load_model("mobilenet_v2"), sample_image("chelsea")
    size = model.preprocess.crop_size
    summary = summarize(model.module, (size, size), name=model.name)   # the window's Workbench keeps it
    result = probe(model, image, summary=summary)                     # warm: trace the recorder once
    shifted = transformed_inputs(model, image, "shift", result.amounts)[1:]

    def plain() -> None:
        with torch.inference_mode():
            for k in range(len(shifted)):
                model.module(shifted[k:k + 1])

    plain()
    probes, plains, leaner = [], [], []
    for _ in range(reps):      # interleaved, so load on the shared machine hits both alike
        probes.append(timed(lambda: probe(model, image, summary=summary)))
        plains.append(timed(plain))
        leaner.append(timed(lambda: probe(model, image, summary=summary, map_similarity=False)))
    p, f, lean = statistics.median(probes), statistics.median(plains), statistics.median(leaner)
    ratio = p / f
    print(f"1 torch thread, mobilenet_v2 (ImageNet weights), chelsea, {reps} interleaved repetitions, medians")
    print(f"shifts {' '.join(f'{a:g}' for a in result.amounts)} px, {len(result.layers)} layers, "
          f"{result.forwards} images through the recorder")
    print(f"probe 8 shifts all layers {p * 1000:.0f} ms   8 plain forwards {f * 1000:.0f} ms   "
          f"ratio {ratio:.2f}   target <= 2   {'PASS' if ratio <= 2 else 'FAIL'}")
    print(f"without the raw-map cosine {lean * 1000:.0f} ms   ratio {lean / f:.2f}   target <= 2   "
          f"{'PASS' if lean / f <= 2 else 'FAIL'}")
    first = result.layers.index("features.0.0")
    deep = result.layers.index("features.18.2")
    two = result.amounts.index(2.0)
    print(f"features.0.0 error at 2 px {result.equivariance[first, two]:.2e}   "
          f"features.18 error at 32 px {result.equivariance[deep, result.amounts.index(32.0)]:.3f}   "
          f"map similarity (mean over shifts) features.0.0 {np.mean(result.map_similarity[first]):.3f} "
          f"features.18 {np.mean(result.map_similarity[deep]):.3f}   top-1 '{model.label(result.reference_top1)}'")


if __name__ == "__main__":
    main()
