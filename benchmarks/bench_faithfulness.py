"""Faithfulness scores: cost against plain forwards and against pytorch-grad-cam, side by side.

The real MobileNetV2 (offline weights), the cat photo, one Grad-CAM map, one torch thread (the
app's job thread), interleaved repetitions, medians:
1. deletion + insertion curves (50 steps, paper substrate) of one map ÷ the same number of single-image
   forwards of the model (2 x 50 = 100); goal <= 0.5. Both ways the app meets it: the first map of a
   model (a fresh Scorer: its folded copy prepared inside) and the next maps (the Scorer reused: its
   traced copy, prepared on the second map, which is shown too), and without a Scorer (a folded copy
   per call); also the same single forwards through the folded channels-last copy, to separate what
   folding and batching each buy;
2. ROAD (MoRF + LeRF at pytorch-grad-cam's default percentiles 10..90, noise 0.01) ÷
   pytorch-grad-cam's ROADCombined on the same map; goal <= 1.0;
3. (not --quick) the Scorer's preparation per model (mobilenet_v2, resnet18, timm's
   tf_efficientnet_lite0; the last two random weights: costs do not depend on them): folded and
   traced copy, their ms per image in batches of 4, and after how many maps the trace pays off.

    .venv/bin/python benchmarks/bench_faithfulness.py [--reps 5] [--quick]

--quick (tests/test_benchmarks.py): 112 px, 10 steps, 3 percentiles, 1 repetition: the same calls.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from skimage import data

try:
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
except ImportError:     # a test extra: without it the ROAD ratio reads nan, the rest still runs
    ROADCombined = None

from cnnviewer.engine.attribution import faithfulness, gradients
from cnnviewer.engine.attribution.scorer import Scorer
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.media.images import from_array
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.inference import prepare_input


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def single_forwards(model, x, count: int) -> None:
    """What a straightforward deletion loop costs: one image per forward, inference mode."""
    with torch.inference_mode():
        for _ in range(count):
            model(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="112 px, 10 steps, 3 percentiles: a few seconds")
    args = parser.parse_args()
    reps, size, steps = (1, 112, 10) if args.quick else (args.reps, 224, 50)
    percentiles = [20, 50, 80] if args.quick else [10, 20, 30, 40, 50, 60, 70, 80, 90]
    torch.set_num_threads(1)
    loaded = load_model("mobilenet_v2")
    model = loaded.module.eval()
    preprocess = loaded.preprocess
    if args.quick:
        from dataclasses import replace
        preprocess = replace(preprocess, resize_size=size, crop_size=size)
    x = prepare_input(from_array(data.chelsea(), "chelsea"), preprocess, loaded.device).tensor
    with torch.no_grad():
        target = Target(class_index=int(model(x).argmax()))
    cam = gradients.grad_cam(model, x, target, "features.18")[0, 0].numpy()
    cam = ((cam - cam.min()) / (cam.max() - cam.min())).astype(np.float32)
    print(f"mobilenet_v2 (real weights), chelsea, {size} px, 1 torch thread, {reps} interleaved repetitions, "
          f"medians")
    if ROADCombined is None:
        print("pytorch-grad-cam is not installed: the ROAD ratio is skipped")

    def ours_curves(scorer=None):
        if scorer is not None:
            scorer.begin_map()
        return faithfulness.deletion_insertion(model, x, target, cam, steps=steps, substrate="paper", scorer=scorer)

    def ours_road():
        return faithfulness.road(model, x, target, cam, percentiles, noise=0.01)

    def theirs_road():
        return ROADCombined(percentiles)(x, cam[None], [ClassifierOutputTarget(target.class_index)], model)

    with faithfulness.scoring_model(model, target) as fast:   # the folded channels-last copy ours scores with
        pass
    single = x.contiguous(memory_format=torch.channels_last)
    plain, copy_single, curves, first, second, later, road, theirs = [], [], [], [], [], [], [], []
    ours_curves(), single_forwards(model, x, 3), single_forwards(fast, single, 3)   # warm-up
    scorers = []
    for _ in range(reps):
        plain.append(timed(lambda: single_forwards(model, x, 2 * steps)))
        copy_single.append(timed(lambda: single_forwards(fast, single, 2 * steps)))
        curves.append(timed(ours_curves))
        scorer = Scorer(model, token=loaded.token)   # as Workbench.scorer makes it for a new model
        for times in (first, second, later):
            times.append(timed(lambda s=scorer: ours_curves(s)))
        scorers.append(scorer)
        road.append(timed(ours_road))
        if ROADCombined is not None:
            theirs.append(timed(theirs_road))
    s1 = statistics.median(copy_single) * 1000
    p, c, f, s2, n, r, t = (statistics.median(v or [float("nan")]) * 1000
                            for v in (plain, curves, first, second, later, road, theirs))
    found = ours_curves()
    print(f"deletion AUC {found['deletion'].auc():.3f}, insertion AUC {found['insertion'].auc():.3f}, "
          f"ROAD {ours_road()[1]['road']:.3f}")
    print(f"deletion+insertion {steps} steps  first map {f:.0f} ms ratio {f / p:.2f}  next maps {n:.0f} ms "
          f"ratio {n / p:.2f}  ({2 * steps} single forwards {p:.0f} ms)  goal <= 0.5  "
          f"first {'PASS' if f / p <= 0.5 else 'FAIL'}  next {'PASS' if n / p <= 0.5 else 'FAIL'}")
    prepared = statistics.median(s.prepare_ms.get("traced", float("nan")) for s in scorers)
    print(f"  second map {s2:.0f} ms (ratio {s2 / p:.2f}): the traced copy prepared ({prepared:.0f} ms) and verified; "
          f"scorer now {scorers[-1].kind}{'' if scorers[-1].fallback is None else ' - ' + scorers[-1].fallback}")
    print(f"  without a Scorer (a folded copy per call) {c:.0f} ms, ratio {c / p:.2f}")
    print(f"  of which batching: {2 * steps} single forwards of the folded channels-last copy {s1:.0f} ms "
          f"(ratio to plain {s1 / p:.2f}); the no-Scorer curves / those {c / s1:.2f}")
    verdict = "n/a" if not theirs else "PASS" if r / t <= 1.0 else "FAIL"
    print(f"ROAD {len(percentiles)} percentiles  ours {r:.0f} ms  pytorch-grad-cam ROADCombined {t:.0f} ms  "
          f"ratio {r / t:.2f}  goal <= 1.0  {verdict}")
    if not args.quick:
        preparation(2 * steps + 1)


def preparation(images: int, batches: int = 6) -> None:
    """Per model: the Scorer's folded and traced copies' preparation and speed, and the break-even."""
    import timm
    import torchvision
    print(f"scorer preparation, 224 px, batches of 4 (medians of {batches}); a map = {images} images")
    print(f"{'model':<24}{'folded ms':>10}{'traced ms':>10}{'folded ms/img':>15}{'traced ms/img':>15}"
          f"{'pays off after':>16}  kept")
    makers = {"mobilenet_v2": lambda: load_model("mobilenet_v2").module,
              "resnet18": lambda: torchvision.models.resnet18(weights=None),
              "timm:tf_efficientnet_lite0": lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False)}
    batch = torch.randn(4, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    target = Target(class_index=1)
    for name, make in makers.items():
        torch.manual_seed(0)
        scorer = Scorer(make().eval())
        per_image = []
        for _ in range(2):       # map 1: the folded copy; map 2: the traced one (prepared, then verified)
            scorer.begin_map()
            scorer.scores(batch, target)
            per_image.append(statistics.median(timed(lambda s=scorer: s.scores(batch, target)) for _ in range(batches))
                             * 1000 / len(batch))
        saved = (per_image[0] - per_image[1]) * images
        traced = scorer.prepare_ms.get("traced", float("nan"))
        after = f"{traced / saved:.1f} maps" if saved > 0 else "never"
        print(f"{name:<24}{scorer.prepare_ms['folded']:>10.0f}{traced:>10.0f}{per_image[0]:>15.1f}"
              f"{per_image[1]:>15.1f}{after:>16}  {scorer.kind}{'' if scorer.fallback is None else ' - ' + scorer.fallback}")


if __name__ == "__main__":
    main()
