"""Style transfer's defaults on the model's own layers (trial row 4): is the content still there, and
did the style arrive?

No VGG weights ship offline, so the backbone is the current model: MobileNetV2 (real weights). Three
content/style pairs from skimage, each run with the defaults (StyleSettings(): 300 L-BFGS steps at
256 px, the backbone's style weight and layers, total variation 0.02) from the content image. The
judge is an independent network, EfficientNet-Lite0 (offline weights): the content's top-1 class
must stay in its top 5 of the result, and the style loss must fall at least 10x. One line a pair,
PASS when both hold; the pictures are written beside the scratch folder for a look.

    .venv/bin/python benchmarks/bench_style.py [--steps 300] [--size 256] [--out DIR] [--quick]

--quick (tests/test_benchmarks.py): one pair, 3 steps at 64 px: the code path in seconds, figures
meaningless.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from cnnviewer.engine.media.images import from_array
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.inference import predict
from cnnviewer.engine.synthesis.settings import StyleSettings
from cnnviewer.engine.synthesis.style import ModelBackbone
from cnnviewer.engine.synthesis.style_transfer import StyleTransfer

PAIRS = (("coffee", "gravel"), ("chelsea", "immunohistochemistry"), ("astronaut", "brick"))


def rgb(pixels: np.ndarray) -> np.ndarray:
    """skimage's grey pictures (gravel, brick) as three channels."""
    return np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=StyleSettings().steps)
    parser.add_argument("--size", type=int, default=StyleSettings().size)
    parser.add_argument("--out", type=Path, help="where the results go (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="one pair, 3 steps at 64 px")
    args = parser.parse_args()
    pairs = PAIRS
    if args.quick:
        pairs, args.steps, args.size = PAIRS[:1], 3, 64
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_style-"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)            # the app's job thread
    backbone = ModelBackbone(load_model("mobilenet_v2"))
    judge = load_model("timm:tf_efficientnet_lite0")
    settings = replace(StyleSettings(), steps=args.steps, size=args.size)
    passed = 0
    for content_name, style_name in pairs:
        content, style = rgb(getattr(data, content_name)()), rgb(getattr(data, style_name)())
        expected = predict(judge, from_array(content, content_name))[0]
        started = time.perf_counter()
        run = StyleTransfer(backbone, content, style, settings)
        before = run.measure()
        run.run(settings.steps)
        after = run.measure()
        seconds = time.perf_counter() - started
        picture = run.pictures()[0]
        Image.fromarray(picture).save(out / f"{content_name}-{style_name}.png")
        seen = [p.index for p in predict(judge, from_array(picture, "result"))]
        rank = seen.index(expected.index) + 1 if expected.index in seen else 0
        fall = before.style / max(after.style, 1e-30)
        ok = rank > 0 and fall >= 10
        passed += ok
        print(f"{content_name + '/' + style_name:30s} style loss fell {fall:7.1f}x  {expected.label!r} in Lite0's top 5: "
              f"{'#' + str(rank) if rank else 'no'}  {seconds:5.1f} s  {'PASS' if ok else 'FAIL'}", flush=True)
    print(f"{passed}/{len(pairs)} pairs pass (style weight {run.settings.style_weight:g}, layers "
          f"{run.settings.style_layers}, TV {settings.tv_weight:g}, {settings.steps} steps at {settings.size} px); "
          f"pictures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
