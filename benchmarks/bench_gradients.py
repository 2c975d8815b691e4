"""Gradient views: cost against the model's own passes and against Captum, side by side.

One torch thread (the app's job thread). For resnet18 and mobilenet_v2 at 224 px:
1. guided backprop ÷ (one plain forward + one backward), interleaved; target <= 1.3;
2. guided backprop ÷ Captum's GuidedBackprop on the same model and target; target <= 1.0;
3. occlusion patches/s ÷ the model's plain batched throughput (images/s at the same
   batch size); target >= 0.8.
Random initialisation (costs do not depend on the weights); nothing is downloaded.

    .venv/bin/python benchmarks/bench_gradients.py [--reps 15] [--quick]

--quick (tests/test_benchmarks.py): 112 px images, 2 repetitions, the same calls and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

try:
    from captum.attr import GuidedBackprop
except ImportError:     # a test extra: without it the Captum columns read nan, the rest still runs
    GuidedBackprop = None

from cnnviewer.engine.attribution import gradients
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.runtime.memory import keep_freed_memory


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def forward_backward(model, x) -> None:
    """The plain gradient of the score with respect to the input (weights frozen, as in the app)."""
    x = x.clone().requires_grad_(True)
    torch.autograd.grad(model(x)[0, 3], x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="112 px, 2 repetitions: a few seconds")
    args = parser.parse_args()
    reps, size, warm = (2, 112, 1) if args.quick else (args.reps, 224, 2)
    keep_freed_memory()
    torch.set_num_threads(1)
    print(f"1 torch thread, {size} px, {reps} interleaved repetitions, medians")
    if GuidedBackprop is None:
        print("Captum is not installed (pip install captum): its columns are skipped")
    print(f"{'model':<14}{'fwd+bwd ms':>11}{'guided ms':>11}{'ratio':>7}{'captum ms':>11}{'ratio':>7}"
          f"{'occl. patch/s':>15}{'plain img/s':>13}{'ratio':>7}  verdicts")
    for name in ("resnet18", "mobilenet_v2"):
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        if name == "resnet18":   # Captum needs non-in-place ReLU modules to be correct
            for module in model.modules():
                if isinstance(module, torch.nn.ReLU):
                    module.inplace = False
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        x = torch.randn(1, 3, size, size)
        target = Target(class_index=3)
        captum = GuidedBackprop(model) if GuidedBackprop is not None else None
        plain, guided, theirs = [], [], []
        for _ in range(warm):
            forward_backward(model, x)
            gradients.guided_backprop(model, x, target)
            if captum is not None:
                captum.attribute(x, target=3)
        for _ in range(reps):
            plain.append(timed(lambda: forward_backward(model, x)))
            guided.append(timed(lambda: gradients.guided_backprop(model, x, target)))
            if captum is not None:
                theirs.append(timed(lambda: captum.attribute(x, target=3)))
        batch = 16
        patches = gradients.occlusion(model, x, target, patch=56, stride=56, batch=batch)   # warm-up
        occlusion_s = timed(lambda: gradients.occlusion(model, x, target, patch=32, stride=16, batch=batch))
        count = len(range(0, size - 32 + 1, 16)) ** 2
        images = x.repeat(batch, 1, 1, 1)
        with torch.inference_mode():
            model(images)
            throughput_s = statistics.median(timed(lambda: model(images)) for _ in range(3))
        del patches
        p, g, c = (statistics.median(v or [float("nan")]) * 1000 for v in (plain, guided, theirs))
        patch_rate, image_rate = count / occlusion_s, batch / throughput_s
        verdicts = ["PASS" if g / p <= 1.3 else "FAIL", "n/a" if not theirs else "PASS" if g / c <= 1.0 else "FAIL",
                    "PASS" if patch_rate / image_rate >= 0.8 else "FAIL"]
        print(f"{name:<14}{p:>11.1f}{g:>11.1f}{g / p:>7.2f}{c:>11.1f}{g / c:>7.2f}"
              f"{patch_rate:>15.1f}{image_rate:>13.1f}{patch_rate / image_rate:>7.2f}  {' '.join(verdicts)}")


if __name__ == "__main__":
    main()
