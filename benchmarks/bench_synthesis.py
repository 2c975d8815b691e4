"""Synthesis (issue 13): how fast, and whether an independent network sees the class too.

1. Steps/s of a channel objective at 224 px (mobilenet_v2 features.10 channel 7, resnet18 layer3
   channel 7; random weights are enough for speed), one torch thread as the app's job thread:
   our Fourier ascent (the same parameterization and transforms as Lucent's default render_vis)
   and our pixel ascent (preset 3), against Lucent's `render_vis` side by side in this run, at a
   224 px image as ours (and at its default 128 px, which earlier figures compared against).
   Target: ours >= 2x Lucent. Lucent is not a dependency: point --lucent at a folder holding it
   (installed with --no-deps, plus kornia, decorator, tqdm and a stub IPython; it pins an old
   kornia, which it does not need for these calls), else that column is skipped.
2. Class ascent on MobileNetV2 (real weights) for --classes ImageNet classes in six modes
   (pixels unregularized; pixels with preset 3, alone and with jitter 8; pixels with multi-faceted
   ascent's total variation and jitter; Fourier with transforms; Fourier without), each
   result judged by MobileNetV2 itself (top-1) and by the independent EfficientNet-Lite0 (offline
   weights; is the class in its top-5?). Same-network success proves little (fooling images):
   the regularized modes must do clearly better than unregularized ascent with Lite0.
3. Facets: K = 4 facets ascended in one batch as the app runs them (one torch thread per facet, up
   to the cores) against 4 separate runs on the job thread's one thread (preset 3, 224 px, the same
   starts). Target: batch / separate <= 0.6. Also the batch on one thread.

    .venv/bin/python benchmarks/bench_synthesis.py [--classes 20] [--steps 200] [--lucent DIR] [--quick]

--quick (tests/test_benchmarks.py): 3 steps everywhere, mobilenet_v2 alone for speed, one class judged in
two modes (unless --modes), facets 2 steps at 64 px: every section's code in seconds, figures meaningless.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

CLASSES = (1, 9, 22, 76, 99, 130, 144, 207, 291, 309, 323, 340, 388, 409, 417, 430, 466, 511, 547, 574,
           609, 651, 717, 779, 817, 852, 907, 933, 947, 980)   # goldfish ... volcano: birds, animals, objects


def bench_speed(steps: int, lucent_dir: str | None, warm: int = 10,
                models: tuple[str, ...] = ("mobilenet_v2", "resnet18")) -> None:
    from cnnviewer.engine.attribution.target import Target
    from cnnviewer.engine.models.loading import load_model
    from cnnviewer.engine.synthesis.fourier import FourierAscent
    from cnnviewer.engine.synthesis.pixels import PixelAscent
    from cnnviewer.engine.synthesis.settings import FourierSettings, preset

    render = objectives = param = None
    if lucent_dir:
        sys.path[:0] = [str(Path(lucent_dir) / part) for part in ("pkg", "deps", "stub")]
        import kornia
        import kornia.geometry.transform as geometry
        for old_name in ("get_rotation_matrix2d", "warp_affine"):   # Lucent calls them by their pre-0.6 names
            if not hasattr(kornia, old_name):
                setattr(kornia, old_name, getattr(geometry, old_name))
        from lucent.optvis import objectives, param, render
    else:
        print("Lucent not given (--lucent DIR, see above): its columns are skipped (nan)")
    # Every run warms `warm` steps first (the transforms' random scales make about a dozen input sizes,
    # each first met building its oneDNN kernels), then is timed for `steps`. Lucent's render_vis
    # parameterizes 128 px unless told (then upsamples the transformed image to 224 for the model);
    # "lucent 224" gives it a 224 px image as ours is, the equal comparison (its jitter translates
    # rather than crops, so its model sees ~254 px, ours ~236).
    print(f"1. steps/s, channel objective, {steps} steps after {warm} warm-up, 1 torch thread")
    print(f"   {'model / layer':<26}{'ours fourier':>13}{'ours pixels':>12}{'lucent 224':>11}{'lucent 128':>11}"
          f"{'fourier/lucent224':>18}{'fourier/lucent128':>18}")
    for name, layer, lucent_layer in (("mobilenet_v2", "features.10", "features_10"), ("resnet18", "layer3", "layer3")):
        if name not in models:
            continue
        model = load_model(name)
        target = Target(layer=layer, channel=7)
        rates = []
        for engine in (FourierAscent(model, target, FourierSettings(steps=warm + steps)),
                       PixelAscent(model, target, preset(3, steps=warm + steps))):
            engine.run(warm)
            started = time.perf_counter()
            engine.run(steps)
            rates.append(steps / (time.perf_counter() - started))
        lucent = {}
        for size in (224, 128):
            lucent[size] = float("nan")
            if render is None:
                continue
            module, image = model.module, (lambda size=size: param.image(size))
            render.render_vis(module, objectives.channel(lucent_layer, 7), param_f=image, thresholds=(warm,),
                              show_image=False, progress=False)
            started = time.perf_counter()
            render.render_vis(module, objectives.channel(lucent_layer, 7), param_f=image, thresholds=(steps,),
                              show_image=False, progress=False)
            lucent[size] = steps / (time.perf_counter() - started)
            module.eval()
        print(f"   {name + ' ' + layer:<26}{rates[0]:>13.1f}{rates[1]:>12.1f}{lucent[224]:>11.1f}{lucent[128]:>11.1f}"
              f"{rates[0] / lucent[224]:>18.2f}{rates[0] / lucent[128]:>18.2f}", flush=True)


def bench_judge(classes: int, steps: int, only: list[str] | None = None) -> None:
    from dataclasses import replace

    from cnnviewer.engine.attribution.target import Target
    from cnnviewer.engine.media.images import from_array
    from cnnviewer.engine.models.loading import load_model
    from cnnviewer.engine.runtime.inference import prepare_input
    from cnnviewer.engine.synthesis.fourier import FourierAscent
    from cnnviewer.engine.synthesis.pixels import PixelAscent
    from cnnviewer.engine.synthesis.settings import (
        FACETS,
        UNREGULARIZED,
        FourierSettings,
        preset,
    )

    model, judge = load_model("mobilenet_v2"), load_model("timm:tf_efficientnet_lite0")
    modes = {"pixels, unregularized": lambda t: PixelAscent(model, t, replace(UNREGULARIZED, steps=steps)),
             "pixels, preset 3": lambda t: PixelAscent(model, t, preset(3, steps=steps)),
             "pixels, preset 3 + jitter 8": lambda t: PixelAscent(model, t, replace(preset(3, steps=steps), jitter=8)),
             "pixels, TV + jitter (facets')": lambda t: PixelAscent(model, t, replace(FACETS, steps=steps)),
             "fourier + transforms": lambda t: FourierAscent(model, t, FourierSettings(steps=steps)),
             "fourier, no transforms": lambda t: FourierAscent(model, t, FourierSettings(steps=steps, transforms=False))}
    modes = {mode: make for mode, make in modes.items() if not only or any(word in mode for word in only)}
    print(f"\n2. class ascent on mobilenet_v2, {classes} classes, {steps} steps; judged by mobilenet_v2 (top-1) "
          "and by EfficientNet-Lite0 (class in its top-5)")
    print(f"   {'mode':<30}{'own top-1':>10}{'Lite0 top-5':>13}{'Lite0 p(class)':>16}{'s/run':>8}")
    for mode, make in modes.items():
        own = lite = 0
        probabilities, took = [], []
        for class_index in CLASSES[:classes]:
            started = time.perf_counter()
            engine = make(Target(class_index=class_index))
            engine.run(steps)
            took.append(time.perf_counter() - started)
            pixels = engine.pictures()[0]
            with torch.no_grad():
                own += int(model.module(prepare_input(from_array(pixels, "x"), model.preprocess,
                                                      model.device).tensor).argmax()) == class_index
                logits = judge.module(prepare_input(from_array(pixels, "x"), judge.preprocess, judge.device).tensor)
            probability = logits.softmax(dim=1)[0]
            lite += int(class_index in probability.topk(5).indices.tolist())
            probabilities.append(float(probability[class_index]))
        print(f"   {mode:<30}{own:>6}/{classes:<3}{lite:>9}/{classes:<3}{np.mean(probabilities):>16.3f}"
              f"{np.mean(took):>8.1f}", flush=True)


def bench_facets(steps: int, count: int = 4, size: int = 224) -> None:
    from cnnviewer.engine.attribution.target import Target
    from cnnviewer.engine.models.loading import load_model
    from cnnviewer.engine.runtime.modes import torch_threads
    from cnnviewer.engine.synthesis.facets import Facets, facet_ascent
    from cnnviewer.engine.synthesis.pixels import PixelAscent
    from cnnviewer.engine.synthesis.settings import preset

    model = load_model("mobilenet_v2")
    target = Target(layer="features.14", channel=3)
    starts = torch.randn((count, 3, size, size), generator=torch.Generator().manual_seed(0)) * 10.0
    settings = preset(3, steps=steps)
    batch = facet_ascent(model, target, Facets([], starts, "features.18"), settings)   # as the panel and CLI run it

    def timed(threads: int | None, groups: list[torch.Tensor]) -> float:
        with torch_threads(threads):
            PixelAscent(model, target, settings, start=groups[0]).run(2)    # warm
            started = time.perf_counter()
            for group in groups:
                PixelAscent(model, target, settings, start=group).run(steps)
            return time.perf_counter() - started

    separate = timed(1, [starts[i:i + 1] for i in range(count)])   # K runs on the job thread's one thread
    batched = timed(batch.threads, [starts])
    one_thread = timed(1, [starts])
    separate_all = timed(batch.threads, [starts[i:i + 1] for i in range(count)])
    print(f"\n3. {count} facets, {steps} steps at {size} px, mobilenet_v2 features.14: {count} separate runs on "
          f"the job thread's 1 torch thread {separate:.1f} s; one batch as facets run it ({batch.threads} threads, "
          f"one per facet up to the cores) {batched:.1f} s, ratio {batched / separate:.2f} (target <= 0.6); the "
          f"batch on 1 thread {one_thread:.1f} s, {one_thread / separate:.2f}; separate runs on {batch.threads} "
          f"threads {separate_all:.1f} s (batch / these {batched / separate_all:.2f})", flush=True)
    # On one thread a batch cannot gain: a 224 px image already gives the 1x1 convolutions' GEMMs
    # 12544 rows (their time grows 4.2-4.5x for 4 images), and the elementwise passes and depthwise
    # convolutions' backward, memory-bound, grow 7-8x once the batch's activations (19 MB a tensor
    # at 112 px) leave the cache. A batch splits well over threads; one small image does not.


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200, help="steps per class-ascent run")
    parser.add_argument("--speed-steps", type=int, default=60)
    parser.add_argument("--lucent", help="folder with Lucent (pkg/, deps/, stub/ as described above)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["speed", "judge", "facets"])
    parser.add_argument("--modes", nargs="*", help="judge only the modes whose names hold one of these words")
    parser.add_argument("--quick", action="store_true", help="3 steps, one class, mobilenet_v2's speed only")
    args = parser.parse_args()
    facet_steps, facet_size, warm, speed_models = 40, 224, 10, ("mobilenet_v2", "resnet18")
    if args.quick:
        args.classes, args.steps, args.speed_steps = 1, 3, 3
        args.modes = args.modes or ["unregularized", "fourier + transforms"]
        warm, speed_models = 2, ("mobilenet_v2",)
        facet_steps, facet_size = 2, 64
    from cnnviewer.engine.runtime.memory import keep_freed_memory
    keep_freed_memory()
    torch.set_num_threads(1)
    if "speed" not in args.skip:
        bench_speed(args.speed_steps, args.lucent, warm, speed_models)
    if "judge" not in args.skip:
        bench_judge(min(args.classes, len(CLASSES)), args.steps, args.modes)
    if "facets" not in args.skip:
        bench_facets(facet_steps, size=facet_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
