"""The randomization sanity check: seconds per stage, and what randomizing one copy saves.

One torch thread (the app's job thread), the real MobileNetV2 at 224 px and the cat, its top-1 class:
1. the cascading check with saliency, guided backprop, Grad-CAM and integrated gradients (16 steps):
   seconds per stage, and ÷ the same four maps on the trained model (Workbench.gradient, median of 3),
   i.e. what the check adds beyond the maps themselves; target <= 1.15;
2. building every stage's network: one copy randomized incrementally (what sanity_check does)
   ÷ a fresh `randomized_copy` per stage with that stage's cumulative names; target <= 0.5.

    .venv/bin/python benchmarks/bench_sanity.py [--quick]

--quick (tests/test_benchmarks.py): the first 3 stages, 4 integrated-gradients steps, the same calls and ratios.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")

import torch

from cnnviewer.engine.attribution import sanity
from cnnviewer.engine.attribution.similarity import mean_similarity, rank_correlation
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.workbench import Workbench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 stages, 4 IG steps: a few seconds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stages, steps = (3, 4) if args.quick else (None, 16)
    model = load_model("mobilenet_v2")
    image = sample_image("chelsea")
    with torch.no_grad():
        target = Target(class_index=int(model.module(prepare_input(image, model.preprocess, model.device).tensor)
                                        .argmax()))
    methods = {"saliency": {}, "guided-backprop": {}, "grad-cam": {}, "integrated-gradients": {"steps": steps}}
    workbench = Workbench()
    for method, options in methods.items():    # warm-up: summary, allocator
        workbench.gradient(model, image, method, target, **options)
    start = time.perf_counter()
    rank_correlation(torch.rand(8, 8).numpy(), torch.rand(8, 8).numpy())   # the first check imports scipy.stats
    imports = time.perf_counter() - start

    once = []
    for _ in range(1 if args.quick else 3):
        start = time.perf_counter()
        for method, options in methods.items():
            workbench.gradient(model, image, method, target, **options)
        once.append(time.perf_counter() - start)
    maps_once = statistics.median(once)
    result = sanity.sanity_check(workbench, model, image, target, methods, stages=stages)
    count = len(result.stages)                 # the original counts: its maps are computed too
    per_stage = result.milliseconds / 1000.0 / count
    ratio = per_stage / maps_once
    print(f"1 torch thread, mobilenet_v2 224 px, {count} stages (original included), IG {steps} steps; "
          f"the first check also imports scipy.stats: {imports:.2f} s once")
    print(f"{'cascading check':<28}{'s/stage':>9}{'maps once s':>13}{'ratio':>7}  verdict")
    print(f"{'4 methods':<28}{per_stage:>9.3f}{maps_once:>13.3f}{ratio:>7.2f}  {'PASS' if ratio <= 1.15 else 'FAIL'}")
    for method in methods:
        print(f"  {method:<22} mean rank correlation {mean_similarity(result.spearman[method]):5.2f}"
              f"  failing {result.failing[method]}")

    plan = sanity.randomization_stages(model.module)[:count - 1]
    start = time.perf_counter()
    work = copy.deepcopy(model.module)
    for _, names in plan:
        for name in names:
            sanity._reinitialise(work, name, 0)
    incremental = time.perf_counter() - start
    start = time.perf_counter()
    for k in range(len(plan)):
        sanity.randomized_copy(model.module, [n for _, names in plan[:k + 1] for n in names], 0)
    recopied = time.perf_counter() - start
    ratio = incremental / recopied
    print(f"{'building the stages':<28}{'one copy s':>11}{'copy/stage s':>14}{'ratio':>7}  verdict")
    print(f"{f'{len(plan)} stages':<28}{incremental:>11.3f}{recopied:>14.3f}{ratio:>7.2f}  "
          f"{'PASS' if ratio <= 0.5 else 'FAIL'}")


if __name__ == "__main__":
    main()
