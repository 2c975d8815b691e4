"""Evaluate attribution over a folder: throughput, and its cost against plain forwards of the same images.

One torch thread (the app's job thread), the real MobileNetV2 at 224 px, photos from skimage.data in an
indexed folder. Side by side in one run:
1. the folder evaluation (6 methods x 3 metrics: deletion, insertion, ROAD; 50 steps) in images/s;
2. plain single-image forwards of the same images (3 after each (image, method) pair, interleaved;
   median), and the ratio evaluation time / plain-forward time of the images: what one folder
   evaluation costs in forward passes;
3. per method, seconds per image (its map and its scores);
4. the second click: the same evaluation read back from the cache beside the index, in ms.

    .venv/bin/python benchmarks/bench_evaluate.py [--images 4] [--steps 50] [--quick]

--quick (tests/test_benchmarks.py): 1 image, 2 methods, 5 steps; the same calls and ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")

import torch
from PIL import Image
from skimage import data

from cnnviewer.engine.attribution.evaluate import DEFAULT_METHODS, METRICS
from cnnviewer.engine.attribution.evaluate_cache import evaluate_index, finish, start_index
from cnnviewer.engine.dataset.build import build_index
from cnnviewer.engine.media.images import load_image
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.runtime.memory import keep_freed_memory
from cnnviewer.engine.workbench import Workbench

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "colorwheel", "retina")


def plain_forward(model, x) -> float:
    """Seconds for one plain forward of one prepared image."""
    with torch.inference_mode():
        start = time.perf_counter()
        model.module(x)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="1 image, 2 methods, 5 steps: a few seconds")
    args = parser.parse_args()
    count, steps = (1, 5) if args.quick else (min(args.images, len(PHOTOS)), args.steps)
    methods = ("saliency", "grad-cam") if args.quick else DEFAULT_METHODS
    keep_freed_memory()
    torch.set_num_threads(1)
    model = load_model("mobilenet_v2")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        for name in PHOTOS[:count]:
            Image.fromarray(getattr(data, name)()).convert("RGB").save(folder / f"{name}.jpg", quality=92)
        index = build_index(folder, model, Path(scratch) / "index", layers=["logits"], batch_size=8)
        paths = [index.path(row) for row in index.valid_rows]
        inputs = [prepare_input(load_image(p), model.preprocess, model.device, model.dtype).tensor for p in paths]
        plain_forward(model, inputs[0])
        run = start_index(Workbench(), model, index, methods=methods, metrics=METRICS, steps=steps, use_cache=False)
        evaluation, forwards = 0.0, []
        while not run.finished:      # one (image, method) pair, then plain forwards: interleaved, so a load
            start = time.perf_counter()   # that comes and goes on a shared machine weighs on both alike
            run.run(seconds=0)
            evaluation += time.perf_counter() - start
            forwards += [plain_forward(model, inputs[(run.done - 1) // len(methods) % len(inputs)]) for _ in range(3)]
        found = finish(index, run)
        start = time.perf_counter()
        again = evaluate_index(Workbench(), model, index, methods=methods, metrics=METRICS, steps=steps)
        cached_ms = (time.perf_counter() - start) * 1000
    forward = statistics.median(forwards) * count
    print(f"mobilenet_v2 (real weights), 1 torch thread, 224 px, {count} images, {len(methods)} methods x "
          f"{len(METRICS)} metrics ({', '.join(METRICS)}), {steps} steps")
    print(f"folder  {count} images  {count / evaluation:.4f} images/s  forward {1000 * forward / count:.1f} ms/image"
          f"  ratio {evaluation / forward:.0f}  (evaluation time / plain forwards of the same images)")
    for row in found.methods:
        print(f"  {row.method:<18}{row.seconds / count:8.2f} s/image")
    print(f"cached second call  {cached_ms:.1f} ms  (read back: {again.cached})")


if __name__ == "__main__":
    main()
