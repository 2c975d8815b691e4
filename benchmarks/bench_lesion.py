"""Lesion study (Veit et al. 2016): its cost against plain forwards, side by side, and its numbers on real weights.

One torch thread (the app's job thread). Real ImageNet weights of MobileNetV2 (torchvision) and
EfficientNet-Lite0 (timm, offline pack), on real photos: scikit-image's colour photos (cat, coffee,
astronaut, rocket, two motorcycles) as centre and corner crops and mirrored copies, at 224 px.
1. the lesion study deleting each deletable block alone, over N images and B blocks ÷ N·B plain
   forwards of the same images in the same batches (target <= 0.7): what it reuses is printed;
2. the whole study with the random deletions ÷ the same number of plain forwards (no target: the
   earliest of k random blocks is early, so less is reused);
3. agreement with the intact top-1 for each deleted block: the README quotes these.

    .venv/bin/python benchmarks/bench_lesion.py [--images 36] [--reps 2] [--quick]

--quick (tests/test_benchmarks.py): 4 images, 1 repetition, two random counts: the same lines.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from skimage import data

from cnnviewer.engine.experiments.lesion import lesion_study
from cnnviewer.engine.media.images import from_array
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.runtime.memory import keep_freed_memory

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")
TARGET = 0.7


def photos(count: int):
    """`count` real photos: each of PHOTOS whole, then crops (4 corners at 75 %) and mirrored copies."""
    sources = []
    for name in PHOTOS:
        pixels = getattr(data, name)()
        sources.extend(pixels if name == "stereo_motorcycle" else [pixels])   # (left, right, disparity)
    sources = [s for s in sources if s.ndim == 3]
    views = []
    for step in range(6):
        for index, pixels in enumerate(sources):
            image = Image.fromarray(pixels)
            w, h = image.size
            if step in (1, 2, 3, 4):
                x, y = ((0, 0), (w // 4, 0), (0, h // 4), (w // 4, h // 4))[step - 1]
                image = image.crop((x, y, x + 3 * w // 4, y + 3 * h // 4))
            if step == 5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            views.append(from_array(np.asarray(image), f"{PHOTOS[min(index, len(PHOTOS) - 1)]}#{step}"))
    return views[:count]


def plain(model, images, batch: int) -> float:
    """Seconds of one plain batched forward pass over `images` (inputs prepared beforehand)."""
    inputs = [torch.cat([prepare_input(p, model.preprocess, model.device).tensor for p in images[i:i + batch]])
              for i in range(0, len(images), batch)]
    start = time.perf_counter()
    with torch.inference_mode():
        for x in inputs:
            model.module(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=36)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 images, 1 repetition")
    args = parser.parse_args()
    count, reps, counts, repeats = (4, 1, (1, 2), 2) if args.quick else (args.images, args.reps, (1, 2, 3, 4, 5, 6), 5)
    batch = 16
    keep_freed_memory()
    torch.set_num_threads(1)
    images = photos(count)
    print(f"1 torch thread, 224 px, {len(images)} real photos (crops of {', '.join(PHOTOS)}), batch {batch}, "
          f"{reps} interleaved repetitions, medians")
    for name in ("mobilenet_v2", "timm:tf_efficientnet_lite0"):
        model = load_model(name)
        lesion_study(model, images[:2], random_counts=(), batch=batch)     # warm: trace, allocator
        plain(model, images[:2], batch)
        study_s, plain_s, full_s = [], [], []
        for _ in range(reps):
            single = lesion_study(model, images, random_counts=(), batch=batch)
            study_s.append(single.seconds)
            plain_s.append(plain(model, images, batch))
            full = lesion_study(model, images, random_counts=counts, repeats=repeats, batch=batch)
            full_s.append(full.seconds)
        blocks = sum(b.deletable for b in single.blocks)
        runs = blocks + len(counts) * repeats
        one = statistics.median(plain_s)
        ratio = statistics.median(study_s) / (blocks * one)
        full_ratio = statistics.median(full_s) / (runs * one)
        print(f"\n{name}: {len(single.blocks)} blocks, {blocks} deletable; reuse: {single.reuse}")
        print(f"{name:<28} N={len(images)} B={blocks}  study {statistics.median(study_s):.2f} s  "
              f"N·B plain forwards {blocks * one:.2f} s  ratio {ratio:.2f}  {'PASS' if ratio <= TARGET else 'FAIL'}"
              f" (<= {TARGET})")
        print(f"{name:<28} with {len(counts) * repeats} random deletions  study {statistics.median(full_s):.2f} s  "
              f"plain {runs * one:.2f} s  ratio {full_ratio:.2f}")
        print(f"{'block':<14}{'skip':<12}{'in → out':<26}agreement with the intact top-1")
        for block, lesion in zip(full.blocks, full.per_block):
            shapes = f"{'×'.join(map(str, block.in_shape))} → {'×'.join(map(str, block.out_shape))}"
            value = f"{lesion.agreement:.3f}" if lesion.agreement is not None else "—  " + block.reason.split(":")[0]
            print(f"{block.name:<14}{block.skip:<12}{shapes:<26}{value}")
        curve = "  ".join(f"k={r.count}: {r.agreement_mean:.3f} ± {r.agreement_sd:.3f}" for r in full.random)
        print(f"random deletions ({repeats} draws each)  {curve}")


if __name__ == "__main__":
    main()
