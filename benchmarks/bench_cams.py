"""CAM methods: our time ÷ pytorch-grad-cam's and ÷ torchcam's same method, side by side.

One torch thread (the app's job thread), random initialisation (costs do not depend on the
weights; nothing is downloaded), 224 px, one image, class 3. Methods: Grad-CAM, Grad-CAM++,
Score-CAM, LayerCAM, Eigen-CAM on resnet18 (layer4) and mobilenet_v3_large (features.16).
Each call is what a user waits for: the forward pass, the backward pass where the method needs
one, and the map (theirs also min-max scale and resize it; ours upsamples it). Each library's
extractor is built inside the call in a `with` (their READMEs' pattern; it only registers hooks),
so no library's hooks run during another's timing. Repetitions are interleaved (the order
rotates, so each goes first as often); times are medians, and each ratio is the median of the
ratios within a round (calls of one round share the machine's load, which drifts here).
Score-CAM (one forward per channel: 512 and 960 here) runs fewer repetitions. torchcam 0.5 has no Eigen-CAM: its column reads n/a.
Goal: every ratio <= 1.0 (torchcam's README publishes 6.8 s CPU for resnet18 Score-CAM).

    .venv/bin/python benchmarks/bench_cams.py [--reps 15] [--score-reps 2] [--quick]

--quick (tests/test_benchmarks.py): 112 px, 1 repetition, resnet18 only; the same calls and ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from cnnviewer.engine.attribution import methods
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.runtime.memory import keep_freed_memory

try:   # test extras: without one, its column reads nan and the rest still runs
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
except ImportError:
    pgc = None
try:
    import torchcam.methods as tc
except ImportError:
    tc = None

METHODS = ("grad-cam", "grad-cam++", "score-cam", "layer-cam", "eigen-cam")
LAYERS = {"resnet18": "layer4", "mobilenet_v3_large": "features.16"}
PGC = {"grad-cam": "GradCAM", "grad-cam++": "GradCAMPlusPlus", "score-cam": "ScoreCAM", "layer-cam": "LayerCAM",
       "eigen-cam": "EigenCAM"}
TORCHCAM = {"grad-cam": "GradCAM", "grad-cam++": "GradCAMpp", "score-cam": "ScoreCAM", "layer-cam": "LayerCAM"}
CLASS = 3


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):      # pytorch-grad-cam's Score-CAM draws tqdm bars
        function()
    return time.perf_counter() - start


def ours(model: torch.nn.Module, method: str, layer: str, x: torch.Tensor) -> Callable[[], object]:
    return lambda: methods.attribute(method, model, x, Target(class_index=CLASS), layer=layer)


def theirs_pgc(model: torch.nn.Module, method: str, layer: str, x: torch.Tensor) -> Callable[[], object] | None:
    if pgc is None:
        return None
    module, targets = dict(model.named_modules())[layer], [ClassifierOutputTarget(CLASS)]

    def call() -> object:
        with getattr(pgc, PGC[method])(model, [module]) as extractor:   # its README's pattern: hooks off after
            return extractor(input_tensor=x, targets=targets)
    return call


def theirs_torchcam(model: torch.nn.Module, method: str, layer: str, x: torch.Tensor,
                    size: int) -> Callable[[], object] | None:
    if tc is None or method not in TORCHCAM:
        return None

    def call() -> object:
        with getattr(tc, TORCHCAM[method])(model, layer, input_shape=(3, size, size)) as extractor:
            if method == "score-cam":          # gradient-free: its README runs the forward in inference mode
                with torch.inference_mode():
                    model(x)
                return extractor(class_idx=CLASS)
            return extractor(class_idx=CLASS, scores=model(x))
    return call


def _rotated(rep: int) -> list[int]:
    return [(rep + k) % 3 for k in range(3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--score-reps", type=int, default=2, help="repetitions for Score-CAM (minutes each)")
    parser.add_argument("--quick", action="store_true", help="112 px, 1 repetition, resnet18: a few seconds")
    args = parser.parse_args()
    size, reps, score_reps, names = (112, 1, 1, ("resnet18",)) if args.quick else \
        (224, args.reps, args.score_reps, tuple(LAYERS))
    keep_freed_memory()
    torch.set_num_threads(1)
    print(f"1 torch thread, {size} px, interleaved repetitions ({reps}; Score-CAM {score_reps}), medians")
    for missing, what in ((pgc, "pytorch-grad-cam"), (tc, "torchcam")):
        if missing is None:
            print(f"{what} is not installed: its columns read nan")
    print(f"{'model':<20}{'method':<12}{'ours ms':>10}{'pgc ms':>10}{'ratio':>7}{'torchcam ms':>13}{'ratio':>7}"
          "  verdicts")
    failures = 0
    for name in names:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        x = torch.randn(1, 3, size, size)
        layer = LAYERS[name]
        for method in METHODS:
            calls = [ours(model, method, layer, x), theirs_pgc(model, method, layer, x),
                     theirs_torchcam(model, method, layer, x, size)]
            times: list[list[float]] = [[], [], []]
            for call in calls:           # warm-up (allocator, one-time graph/hook set-up)
                if call is not None and method != "score-cam":
                    timed(call)
            for rep in range(score_reps if method == "score-cam" else reps):
                for column in _rotated(rep):       # each library goes first as often: load drifts cancel
                    if calls[column] is not None:
                        times[column].append(timed(calls[column]))
            mine, pgc_ms, tc_ms = (statistics.median(t) * 1000 if t else float("nan") for t in times)
            ratios = tuple(statistics.median(a / b for a, b in zip(times[0], other)) if other else float("nan")
                           for other in times[1:])
            verdicts = ["n/a" if math.isnan(r) else "PASS" if r <= 1.0 else "FAIL" for r in ratios]
            failures += verdicts.count("FAIL")
            print(f"{name:<20}{method:<12}{mine:>10.1f}{pgc_ms:>10.1f}{ratios[0]:>7.2f}{tc_ms:>13.1f}"
                  f"{ratios[1]:>7.2f}  {' '.join(verdicts)}")
    print(f"{failures} ratio(s) above 1.0")


if __name__ == "__main__":
    main()
