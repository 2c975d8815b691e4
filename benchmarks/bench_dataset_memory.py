"""Resident memory while indexing a big folder: the whole index is never held in RAM.

Indexes N images (default 10,000) with resnet50 at every default layer (its top-level blocks,
avgpool, fc and the logits: 19,408 channels, about 233 KB of arrays per image, 2.3 GB at 10,000)
and samples this process's RSS every 0.2 s. resnet50 runs with random weights (memory does not
depend on them; its pretrained weights are not offline here), one torch thread, one decoding worker.
The files are hard links to 200 distinct ~500 px JPEGs (each is decoded like any other file).
Target (issue 12): peak RSS within 2 GiB; RSS should stay flat as the arrays grow on disk.

    .venv/bin/python benchmarks/bench_dataset_memory.py [--images 10000] [--model resnet50] [--quick]

--quick (tests/test_benchmarks.py): 48 images (links to 16 JPEGs) into resnet18's blocks, same calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GIB = 1 << 30


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def make_folder(root: Path, count: int, distinct_count: int = 200) -> Path:
    """`count` files: hard links to `distinct_count` distinct ~500 px JPEGs (crops, flips, tints of sample photos)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    distinct, folder = root / "distinct", root / "images"
    distinct.mkdir()
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry")
    for i in range(distinct_count):
        picture = Image.fromarray(getattr(data, names[i % len(names)])()).convert("RGB")
        left, top = (int(v) for v in rng.integers(0, 60, 2))
        crop = picture.crop((left, top, left + int(picture.width * 0.85), top + int(picture.height * 0.85)))
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else crop
        tinted = np.clip(np.asarray(crop.resize((500, 375))) * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
        Image.fromarray(tinted).save(distinct / f"{i:03d}.jpg", quality=90)
    for i in range(count):   # 1,000 per subfolder: the index searches folders recursively
        target = folder / f"{i // 1000:02d}" / f"{i:05d}.jpg"
        target.parent.mkdir(exist_ok=True)
        os.link(distinct / f"{i % distinct_count:03d}.jpg", target)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16,
                        help="16: resnet50's activations for a batch of 32 alone take ~1.2 GiB at their peak")
    parser.add_argument("--quick", action="store_true", help="48 images into resnet18: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.images, args.model = 48, "resnet18"
    import torch

    from cnnviewer.engine.dataset.build import build_index
    from cnnviewer.engine.dataset.index import default_layers
    from cnnviewer.engine.models.loading import load_model
    from cnnviewer.engine.runtime.memory import keep_freed_memory

    keep_freed_memory()          # as the app and the CLI do: freed memory stays in the process
    torch.set_num_threads(1)
    scratch = Path(tempfile.mkdtemp(prefix="bench_dataset_memory_"))
    folder = make_folder(scratch, args.images, 16 if args.quick else 200)
    model = load_model(args.model)
    layers = default_layers(model)
    samples: list[tuple[float, int, int]] = []    # (seconds, images done, rss)
    done = [0]
    stop = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        while not stop.wait(0.2):
            samples.append((time.perf_counter() - started, done[0], rss_bytes()))

    before = rss_bytes()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def progress(count: int, total: int) -> None:
        done[0] = count
        if count % 500 < 32:
            print(f"  {count:>6}/{total}  rss {rss_bytes() / GIB:.2f} GiB  {time.perf_counter() - started:7.0f} s",
                  flush=True)

    index = build_index(folder, model, scratch / "index", layers=layers, batch_size=args.batch_size, workers=args.workers,
                        progress=progress)
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - started
    on_disk = sum(p.stat().st_size for p in (scratch / "index").iterdir() if p.is_file())
    peak = max(rss for _, _, rss in samples) if samples else rss_bytes()
    print(f"{args.model} (random weights), batch {args.batch_size}, {len(layers)} layers, "
          f"{sum(index.channels(name) for name in index.layers):,} channels; {len(index.rows):,} images in "
          f"{seconds:.0f} s ({len(index.rows) / seconds:.1f} images/s)")
    print(f"index on disk {on_disk / GIB:.2f} GiB; RSS before indexing {before / GIB:.2f} GiB, peak {peak / GIB:.2f} GiB "
          f"(target <= 2 GiB: {'met' if peak <= 2 * GIB else 'NOT met'})")
    for fraction in (0.25, 0.5, 0.75, 1.0):
        near = min(samples, key=lambda s: abs(s[1] - fraction * args.images)) if samples else (0, 0, 0)
        print(f"  at {near[1]:>6} images: rss {near[2] / GIB:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
