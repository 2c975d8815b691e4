"""Benchmark the engine's foundations against the project's targets.

Run: python benchmarks/bench_foundation.py [--reps N] [--launch-runs N] [--quick]

--quick (tests/test_benchmarks.py): mobilenet_v2 only, one thread, 3 repetitions and one
launch: every section's code, a few seconds, figures meaningless.

Measured side by side in one run, once with torch.set_num_threads(1) (what the
app's job thread uses) and once with torch's default thread count:

1. Forward with full activation capture (recording.capture_activations: the
   torch.fx recorder, already traced) / plain forward under
   torch.inference_mode(), with the hook-based recorder (capture_with_hooks)
   measured in the same interleaved loop for comparison, for
   mobilenet_v2 and resnet50 at 224 px, batch 1. The two are interleaved
   (A B, then B A, ...) so drift in machine load hits both; medians and their
   ratio are reported. Target: ratio <= 1.15.
2. Switching to a layer and building its mosaic from the recorded pass
   (Workbench.feature_maps with a warm cache: lookup + numpy mosaic) for
   resnet50's largest layers and mobilenet_v2's 1280-channel layer.
   Target: median <= 30 ms.
3. Launch to first predictions: a fresh `python -c` that imports PySide6 and
   the engine, loads mobilenet_v2 (offline pack), loads an image and runs the
   recorded forward pass the app runs first. Reported, no target here (the
   full GUI launch is measured separately).

Random initialisation is used for timing (weights do not change the cost);
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnnviewer.engine.media.images import from_array  # noqa: E402
from cnnviewer.engine.models.handle import wrap_module  # noqa: E402
from cnnviewer.engine.runtime import graph_capture, hooks, recording  # noqa: E402
from cnnviewer.engine.workbench import Workbench  # noqa: E402

CAPTURE_TARGET = 1.15
MOSAIC_TARGET_MS = 30.0
MODELS = ("mobilenet_v2", "resnet50")

LAUNCH_CHILD = r"""
import json, sys, time
start = time.perf_counter()
marks = {}
import PySide6.QtCore, PySide6.QtGui, PySide6.QtWidgets
marks['import PySide6'] = time.perf_counter()
import torch
from cnnviewer.engine.media import images
from cnnviewer.engine.models import catalogue
from cnnviewer.engine.workbench import Workbench
marks['import engine'] = time.perf_counter()
threads = int(sys.argv[1])
if threads:
    torch.set_num_threads(threads)
model = catalogue.load_torchvision_model('mobilenet_v2', device='cpu')
marks['load model'] = time.perf_counter()
image = images.sample_image('chelsea')
marks['load image'] = time.perf_counter()
summary = Workbench().forward(model, image)
marks['first predictions'] = time.perf_counter()
steps, previous = {}, start
for name, moment in marks.items():
    steps[name] = (moment - previous) * 1000.0
    previous = moment
print(json.dumps({'steps': steps, 'top1': summary.predictions[0].label,
                  'trained': model.trained, 'threads': torch.get_num_threads()}))
"""


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def plain_forward(model: torch.nn.Module, inputs: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(inputs)
    return time.perf_counter() - start


def captured_forward(model: torch.nn.Module, inputs: torch.Tensor, capture=None) -> float:
    start = time.perf_counter()
    output, recorded = (capture or recording.capture_activations)(model, inputs)
    elapsed = time.perf_counter() - start
    del output, recorded
    return elapsed


def hooked_forward(model: torch.nn.Module, inputs: torch.Tensor) -> float:
    return captured_forward(model, inputs, hooks.capture_with_hooks)


def bench_capture(name: str, reps: int) -> dict:
    """Interleaved plain vs captured forward; returns medians in ms and the ratio."""
    model = build(name)
    torch.manual_seed(0)
    inputs = torch.randn(1, 3, 224, 224)
    recording.capture_activations(model, inputs)          # traces the fx recorder, checks it once
    hooks.capture_with_hooks(model, inputs)           # probe: learns the hook path's clone set
    for _ in range(3):
        plain_forward(model, inputs)
        captured_forward(model, inputs)
        hooked_forward(model, inputs)
    plain, captured, hooked = [], [], []
    for rep in range(reps):
        order = [(plain, plain_forward), (captured, captured_forward), (hooked, hooked_forward)]
        for samples, run in order[rep % 3:] + order[:rep % 3]:   # rotate who goes first
            samples.append(run(model, inputs))
    assert not hooks.has_hooks(model)
    plain_ms = statistics.median(plain) * 1000
    captured_ms = statistics.median(captured) * 1000
    pair_ratio = statistics.median(c / p for c, p in zip(captured, plain))
    return {"plain_ms": plain_ms, "captured_ms": captured_ms, "hooked_ms": statistics.median(hooked) * 1000,
            "ratio": captured_ms / plain_ms, "pair_ratio": pair_ratio,
            "method": "fx" if graph_capture.graph_recorder(model) is not None else "hooks"}


def largest_layers(activations: dict[str, torch.Tensor]) -> list[str]:
    """The first layer of each distinct shape among the 3-D outputs with the most elements."""
    spatial = {name: t for name, t in activations.items() if t.dim() == 3}
    most = max(t.numel() for t in spatial.values())
    chosen: dict[tuple[int, ...], str] = {}
    for name, tensor in spatial.items():
        if tensor.numel() == most:
            chosen.setdefault(tuple(tensor.shape), name)
    return list(chosen.values())


def bench_mosaics(reps: int, models: tuple[str, ...] = MODELS) -> list[dict]:
    """Median ms to switch to a layer and build its mosaic from a warm cache."""
    image = from_array(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8),
                       "random")
    rows = []
    for name, extra in (("resnet50", None), ("mobilenet_v2", "features.18")):
        if name not in models:
            continue
        loaded = wrap_module(build(name), name, device="cpu")
        workbench = Workbench()
        recorded = workbench.cache.get(loaded, image)
        layers = largest_layers(recorded.activations) + ([extra] if extra else [])
        for layer in layers:
            workbench.feature_maps(loaded, image, layer)   # warm-up
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                view = workbench.feature_maps(loaded, image, layer)
                times.append(time.perf_counter() - start)
            rows.append({"model": name, "layer": layer,
                         "shape": "x".join(map(str, recorded.activations[layer].shape)),
                         "mosaic": "x".join(map(str, view.mosaic.shape[:2])),
                         "ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000})
    return rows


def bench_launch(runs: int, threads: int) -> dict:
    """Wall time of a fresh interpreter from start to the first recorded predictions."""
    env = dict(os.environ, CNNVIEWER_OFFLINE="1", QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    walls, details = [], []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", LAUNCH_CHILD, str(threads)], env=env,
                              cwd=ROOT, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - start)
        details.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"walls": walls, "details": details}


def tune_malloc() -> None:
    """What the app does at start (engine.memory.keep_freed_memory)."""
    from cnnviewer.engine.runtime.memory import keep_freed_memory

    print(f"glibc allocator tuned as in the app: {keep_freed_memory()}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="interleaved pairs per model")
    parser.add_argument("--mosaic-reps", type=int, default=30)
    parser.add_argument("--launch-runs", type=int, default=3)
    parser.add_argument("--default-malloc", action="store_true",
                        help="skip the allocator tuning the app applies (engine.memory), to compare")
    parser.add_argument("--quick", action="store_true",
                        help="mobilenet_v2, 1 thread, 3 reps, 1 launch: a smoke run of every section")
    args = parser.parse_args()
    models = MODELS
    if args.quick:
        models, args.reps, args.mosaic_reps, args.launch_runs = ("mobilenet_v2",), 3, 3, 1
    if not args.default_malloc:
        tune_malloc()

    default_threads = torch.get_num_threads()
    configs = [("1 thread", 1), (f"default ({default_threads} threads)", default_threads)][:1 if args.quick else 2]
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, default torch threads {default_threads}")
    print(f"reps: {args.reps} interleaved pairs, {args.mosaic_reps} mosaic builds, "
          f"{args.launch_runs} launches per configuration\n")

    capture_rows, mosaic_rows, launch_rows = [], [], []
    for label, threads in configs:
        torch.set_num_threads(threads)
        for name in models:
            capture_rows.append((label, name, bench_capture(name, args.reps)))
        for row in bench_mosaics(args.mosaic_reps, models):
            mosaic_rows.append((label, row))
        launch_rows.append((label, bench_launch(args.launch_runs, threads)))
    torch.set_num_threads(default_threads)

    print(f"(1) forward with full capture / plain forward, 224 px, batch 1 "
          f"(target <= {CAPTURE_TARGET:.2f})")
    print(f"{'threads':<22}{'model':<14}{'plain ms':>10}{'capture ms':>12}{'ratio':>8}"
          f"{'pair-med':>10}{'method':>8}{'hooks ms':>10}{'hooks ratio':>12}  verdict")
    for label, name, row in capture_rows:
        print(f"{label:<22}{name:<14}{row['plain_ms']:>10.1f}{row['captured_ms']:>12.1f}"
              f"{row['ratio']:>8.3f}{row['pair_ratio']:>10.3f}{row['method']:>8}"
              f"{row['hooked_ms']:>10.1f}{row['hooked_ms'] / row['plain_ms']:>12.3f}"
              f"  {verdict(row['ratio'] <= CAPTURE_TARGET)}")

    print(f"\n(2) switch layer + build mosaic from the recorded pass "
          f"(target <= {MOSAIC_TARGET_MS:.0f} ms)")
    print(f"{'threads':<22}{'model':<14}{'layer':<21}{'activation':<13}{'mosaic':<11}"
          f"{'median ms':>10}{'max ms':>8}  verdict")
    for label, row in mosaic_rows:
        print(f"{label:<22}{row['model']:<14}{row['layer']:<21}{row['shape']:<13}{row['mosaic']:<11}"
              f"{row['ms']:>10.1f}{row['max_ms']:>8.1f}  {verdict(row['ms'] <= MOSAIC_TARGET_MS)}")

    print("\n(3) launch to first predictions: fresh python, import PySide6 + engine, "
          "load mobilenet_v2, sample image, recorded forward (no target; info)")
    for label, result in launch_rows:
        walls = result["walls"]
        last = result["details"][-1]
        steps = ", ".join(f"{k} {v:.0f}" for k, v in last["steps"].items())
        print(f"{label:<22} wall s: first {walls[0]:.2f}, median {statistics.median(walls):.2f} "
              f"(all {', '.join(f'{w:.2f}' for w in walls)})")
        print(f"{'':<22} last run, ms: {steps}; top-1 '{last['top1']}', "
              f"trained={last['trained']}, threads={last['threads']}")


if __name__ == "__main__":
    main()
