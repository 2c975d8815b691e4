"""The dataset index (issue 12): indexing throughput, query latency and map time, mobilenet_v2 on CPU.

1. Indexing: images/s of build_index (default layers = top-level blocks + logits, batch 32,
   workers=0 and workers=1) against a plain batched forward of the same model over the same
   images already decoded and preprocessed in memory (same batch, same torch threads,
   inference_mode). Target: index / plain >= 0.95 for workers=1 (0.8 for workers=0: serial decode).
   The plain forward is timed before, between and after the builds; each build is compared with the
   plain runs either side of it (load drifts), and its main process's CPU with the plain's. Each build runs in a fresh subprocess, which
   reports its peak RSS (ru_maxrss; the decoding worker's separately) so the in-memory tensors
   of the plain forward do not count. The split: decode + preprocess (extract._Images[i], one
   process) against the plain forward. The images are real photos: JPEGs of ~500 px made from
   scikit-image's samples with random crops, flips, colour shifts and sizes (seeded).
2. Queries: top-k (k=9) of one channel and nearest neighbours (k=9) of one query at features.18
   (1280 channels) for 1,000 / 5,000 / 10,000 images: the first call on a freshly opened index
   with its files dropped from the page cache (neighbours normalise and keep the bank then), and
   the median of the following calls. Target: <= 50 ms each at 10k. Query and map timings use a
   synthetic index of the real on-disk format (features.18 + logits, clustered ReLU-like values).
3. Map: PCA-50 + openTSNE (dataset_map, threads 1 and 2) against PCA-50 + scikit-learn's
   Barnes-Hut TSNE(init="pca", same perplexity, 750 iterations like openTSNE's 250 + 500), k-means
   included in both, BLAS/OpenMP limited to the same threads. Target: <= 30 s at 5,000 images.

    .venv/bin/python benchmarks/bench_dataset.py [--quick] [--images 5000] [--map-10k]

--quick (tests/test_benchmarks.py): 24 images indexed in batches of 8 (one build, with the last --workers
value), queries at 1,000 images, a map of 150 on one thread: every section's code in seconds, figures
meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

LAYER, K = "features.18", 9
BUILD = """
import json, os, re, threading, time, torch
torch.set_num_threads({threads})
if {mallopt}:
    from benchmarks.bench_dataset import keep_heap
    keep_heap()
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.dataset.build import build_index

def kib(path, key):
    try:
        return int(re.search(key + r":\\s+(\\d+)", open(path).read()).group(1))
    except (OSError, AttributeError):
        return 0

def tree_pss():   # this process and its decoding workers, shared pages counted once
    kids = [pid for task in os.listdir("/proc/self/task")
            for pid in open(f"/proc/self/task/{{task}}/children").read().split()]
    return sum(kib(f"/proc/{{pid}}/smaps_rollup", "Pss") for pid in ["self", *kids])

model = load_model("mobilenet_v2")
base = kib("/proc/self/status", "VmRSS")
open("/proc/self/clear_refs", "w").write("5")   # reset VmHWM: the peak from here on
with torch.inference_mode():
    model.module.eval()(torch.randn({batch}, 3, 224, 224))
forward = kib("/proc/self/status", "VmHWM")      # what one plain batch's activations need
open("/proc/self/clear_refs", "w").write("5")
peak, done = [tree_pss()], threading.Event()
def poll():
    while not done.wait(1.0):   # smaps_rollup of a big process is costly: poll gently
        peak.append(tree_pss())
threading.Thread(target=poll, daemon=True).start()
started, cpu = time.perf_counter(), time.process_time()
index = build_index({folder!r}, model, {directory!r}, batch_size={batch}, workers={workers}, mp_context={context!r})
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
done.set()
print("RESULT=" + json.dumps({{"seconds": seconds, "cpu": cpu, "rows": len(index.valid_rows), "base_kb": base, "forward_kb": forward,
      "hwm_kb": kib("/proc/self/status", "VmHWM"), "pss_kb": max(peak)}}))
"""

# ---------------------------------------------------------------------------- images
def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` distinct JPEGs of ~500 px (long side 480-520) from scikit-image's sample photos."""
    from PIL import Image
    from skimage import data
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"img_{i:05d}.jpg" for i in range(count)]
    if all(path.is_file() for path in files):
        return files
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.camera(), data.cat(),
               data.immunohistochemistry(), data.hubble_deep_field(), data.retina(), data.colorwheel(),
               data.brick(), data.grass(), data.gravel(), data.moon()]
    sources = [np.repeat(s[:, :, None], 3, axis=2) if s.ndim == 2 else s[:, :, :3] for s in sources]
    rng = np.random.default_rng(seed)
    for i, path in enumerate(files):
        picture = sources[i % len(sources)]
        height, width = picture.shape[:2]
        ch, cw = int(height * rng.uniform(0.55, 1.0)), int(width * rng.uniform(0.55, 1.0))
        y, x = rng.integers(0, height - ch + 1), rng.integers(0, width - cw + 1)
        crop = picture[y:y + ch, x:x + cw].astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = crop * rng.uniform(0.75, 1.25, 3) + rng.uniform(-25, 25, 3)
        image = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
        side = int(rng.integers(480, 521))
        scale = side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
        image.save(path, quality=int(rng.integers(80, 96)))
    return files


# ---------------------------------------------------------------------------- 1. indexing
def decode_all(model, files: list[Path], batch: int) -> tuple[float, list]:
    """Time extract._Images[i] over the files; return the seconds and the preprocessed batches."""
    import torch

    from cnnviewer.engine.dataset.extract import _Images
    images = _Images(files, model.preprocess, 3)
    batches, pending, seconds = [], [], 0.0
    for i in range(len(images)):
        started = time.perf_counter()
        item = images[i]
        seconds += time.perf_counter() - started
        pending.append(item[1])
        if len(pending) == batch or i == len(images) - 1:
            batches.append(torch.stack(pending))
            pending = []
    return seconds, batches


def plain_forward(model, batches: list, cpu: list[float] | None = None) -> float:
    """Seconds of the bare batched forward (eval, inference_mode); CPU seconds (load-proof) into `cpu`."""
    import torch
    model.module.eval()
    with torch.inference_mode():
        model.module(batches[0][:2])   # warm-up, not timed
        started, used = time.perf_counter(), time.process_time()
        for inputs in batches:
            model.module(inputs)
        if cpu is not None:
            cpu.append(time.process_time() - used)
        return time.perf_counter() - started


def build_in_subprocess(folder: Path, directory: Path, workers: int, args: argparse.Namespace) -> dict:
    import shutil
    shutil.rmtree(directory, ignore_errors=True)
    code = BUILD.format(threads=args.threads, folder=str(folder), directory=str(directory), batch=args.batch,
                        workers=workers, context=args.mp_context, mallopt=args.keep_heap)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=7200, check=False,
                         env=dict(os.environ, CNNVIEWER_OFFLINE="1"))
    line = next((item for item in out.stdout.splitlines() if item.startswith("RESULT=")), None)
    if line is None:
        raise SystemExit(f"build (workers={workers}) failed:\n{out.stderr[-3000:]}")
    return json.loads(line.split("=", 1)[1])


def redundant_layers(directory: Path) -> None:
    """Layers whose pooled features equal another layer's (wasted disk and indexing time)."""
    from cnnviewer.engine.dataset.index import KINDS, DatasetIndex, array_file
    index = DatasetIndex(directory)
    total = sum(p.stat().st_size for p in directory.glob("*.npy"))
    print(f"  index on disk: {total / 2**20:.0f} MiB for {len(index.valid_rows)} images "
          f"({total / max(1, len(index.valid_rows)) / 1024:.0f} KiB/image), {len(index.layers)} layers")
    layers, wasted = index.layers, 0
    for i, later in enumerate(layers):
        for earlier in layers[:i]:
            if index.channels(earlier) != index.channels(later):
                continue
            a, b = index.array(earlier, "mean"), index.array(later, "mean")
            if np.allclose(a, b, rtol=1e-4, atol=1e-5):
                size = sum((directory / array_file(later, kind)).stat().st_size for kind in KINDS)
                wasted += size
                print(f"  duplicate: {later} pooled == {earlier} pooled ({size / 2**20:.0f} MiB)")
                break
    if wasted:
        print(f"  duplicated layers: {wasted / total:.0%} of the index")


def bench_indexing(args: argparse.Namespace, work: Path) -> None:
    import torch

    from cnnviewer.engine.models.loading import load_model
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    files = make_images(work / f"images-{args.images}", args.images)
    print(f"{len(files)} JPEGs in {files[0].parent} ({time.perf_counter() - started:.0f} s to make or find)")
    model = load_model("mobilenet_v2")
    decode_s, batches = decode_all(model, files, args.batch)
    forward_cpu: list[float] = []
    forward_s = [plain_forward(model, batches, forward_cpu)]
    n = len(files)
    print(f"\n1. indexing, mobilenet_v2, batch {args.batch}, {args.threads} torch thread(s), "
          f"workers' start: {args.mp_context or 'fork'}; load {load()}")
    print(f"  decode+preprocess (_Images[i]) {decode_s:7.1f} s  {decode_s / n * 1000:6.1f} ms/image")
    print(f"  plain forward (in memory)      {forward_s[0]:7.1f} s  {n / forward_s[0]:6.1f} images/s", flush=True)
    results, around = {}, {}
    for workers in args.workers:
        results[workers] = build_in_subprocess(files[0].parent, work / f"index-w{workers}", workers, args)
        forward_s.append(plain_forward(model, batches, forward_cpu))
        around[workers] = n / statistics.mean(forward_s[-2:])     # the plain runs just before and after
        print(f"  build_index workers={workers} done  {results[workers]['seconds']:7.1f} s; "
              f"plain forward after it {forward_s[-1]:7.1f} s  {n / forward_s[-1]:6.1f} images/s; load {load()}",
              flush=True)
    del batches
    plain = n / statistics.mean(forward_s)
    print(f"  plain forward, mean of {len(forward_s)} runs: {plain:.1f} images/s "
          f"(spread {n / max(forward_s):.1f}-{n / min(forward_s):.1f})")
    print(f"  decode share of decode+forward: {decode_s / (decode_s + n / plain):.0%}; "
          f"serial bound (workers=0): {n / (decode_s + n / plain) / plain:.2f} of plain")
    for workers, result in results.items():
        rate, plain = result["rows"] / result["seconds"], around[workers]
        other = result["seconds"] - n / plain - (decode_s if workers == 0 else 0.0)
        print(f"  build_index workers={workers}  {result['seconds']:7.1f} s  {rate:6.1f} images/s  "
              f"index/plain {rate / plain:.2f} (target >= {0.95 if workers else 0.8})  rows {result['rows']}; "
              f"beyond {'forward' if workers else 'decode + forward'}: {other:+.1f} s")
        print(f"      main process CPU {result['cpu']:.1f} s = {result['cpu'] / statistics.mean(forward_cpu):.2f} of the "
              f"plain forward's CPU ({'decoding in the worker' if workers else 'decoding included'})")
        print(f"      RSS after model load {result['base_kb'] / 1024:.0f} MiB, peak while indexing "
              f"{result['hwm_kb'] / 1024:.0f} MiB (a plain batch's forward alone: {result['forward_kb'] / 1024:.0f} MiB); "
              f"peak PSS with workers {result['pss_kb'] / 1024:.0f} MiB")
    redundant_layers(work / f"index-w{args.workers[0]}")


# ---------------------------------------------------------------------------- synthetic index
def synthetic_index(directory: Path, count: int, seed: int = 0) -> Path:
    """An index of `count` fake images in the real format: features.18 (1280x7x7) and logits (1000)."""
    from cnnviewer.engine.dataset.build import by_channel
    from cnnviewer.engine.dataset.index import (
        BY_CHANNEL,
        FORMAT_VERSION,
        MANIFEST,
        array_file,
    )
    if (directory / MANIFEST).is_file() and (directory / array_file(LAYER, BY_CHANNEL)).is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 100, count)      # 100 clusters, like images of 100 classes
    centres = np.maximum(rng.normal(0.0, 1.0, (100, 1280)), 0).astype(np.float32)
    means = np.maximum(centres[classes] + rng.normal(0, 0.5, (count, 1280)).astype(np.float32), 0)
    maxima = means * rng.uniform(2.0, 6.0, (count, 1280)).astype(np.float32)
    logits = rng.normal(0, 2, (count, 1000)).astype(np.float32)
    logits[np.arange(count), classes * 10] += 10
    arrays = {(LAYER, "max"): maxima, (LAYER, "mean"): means,
              (LAYER, "pos"): rng.integers(0, 49, (count, 1280), dtype=np.int32),
              ("logits", "max"): logits, ("logits", "mean"): logits,
              ("logits", "pos"): np.zeros((count, 1000), np.int32)}
    for (layer, kind), array in arrays.items():
        np.save(directory / array_file(layer, kind), array)
    for layer in (LAYER, "logits"):     # as a finished build writes it: each channel's maxima contiguous
        by_channel(directory / array_file(layer, "max"), directory / array_file(layer, BY_CHANNEL))
    images = [{"row": i, "path": f"img_{i:05d}.jpg", "bytes": 40000 + i, "mtime": 1.7e9 + i, "size": [500, 375]}
              for i in range(count)]
    manifest = {"format": FORMAT_VERSION, "complete": True, "folder": str(directory / "images"),
                "model": "mobilenet_v2", "weights_sha256": "synthetic", "layers": [LAYER, "logits"], "shapes": {LAYER: [1280, 7, 7], "logits": [1000]},
                "files": count, "images": images, "skipped": []}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return directory


def drop_cache(directory: Path) -> None:
    """Ask the kernel to forget the index's pages, so a first query reads from disk as after a reboot."""
    for path in directory.glob("*.npy"):
        with open(path, "rb") as stream:
            os.fsync(stream.fileno())
            os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def keep_heap() -> None:
    """What the app and the CLI do at start (runtime.memory.keep_freed_memory): glibc keeps freed
    memory and serves big blocks from its heap, instead of a fresh mmap whose pages fault in zeroed
    for every batch's activations (with glibc's defaults that is most of a CPU forward's time here)."""
    from cnnviewer.engine.runtime.memory import keep_freed_memory
    keep_freed_memory()


def load() -> str:
    """The 1-minute load average against the CPU count: other work on the machine skews the figures."""
    return f"{os.getloadavg()[0]:.1f}/{os.cpu_count()}"


def timed(call: Callable[..., object], *args: object, **kwargs: object) -> float:
    """Milliseconds of one call(*args, **kwargs)."""
    started = time.perf_counter()
    call(*args, **kwargs)
    return (time.perf_counter() - started) * 1000


def bench_queries(sizes: list[int], work: Path, runs: int) -> None:
    from cnnviewer.engine.dataset.index import DatasetIndex
    print(f"\n2. queries (synthetic index, {LAYER}: 1280 channels, k={K}; ms; first = fresh index, page cache "
          f"dropped; then median of {runs})")
    print(f"  {'images':>7}{'open':>8}{'top 1st':>9}{'top':>8}{'nn 1st':>9}{'nn':>8}  target <= 50 ms at 10k")
    rng = np.random.default_rng(1)
    for count in sizes:
        directory = synthetic_index(work / f"synthetic-{count}", count)
        drop_cache(directory)
        opened = [timed(DatasetIndex, directory) for _ in range(3)]
        index = DatasetIndex(directory)
        top_first = timed(index.top, LAYER, 7, K)
        top = [timed(index.top, LAYER, int(c), K) for c in rng.integers(0, 1280, runs)]
        drop_cache(directory)
        index = DatasetIndex(directory)
        queries = np.maximum(rng.normal(0, 1, (runs + 1, 1280)), 0).astype(np.float32)
        nn_first = timed(index.nearest, queries[0], LAYER, K)
        nn = [timed(index.nearest, q, LAYER, K) for q in queries[1:]]
        print(f"  {count:>7}{statistics.median(opened):8.1f}{top_first:9.1f}{statistics.median(top):8.1f}"
              f"{nn_first:9.1f}{statistics.median(nn):8.1f}   load {load()}")


# ---------------------------------------------------------------------------- 3. map
def sklearn_map(index, threads: int) -> None:
    from sklearn.manifold import TSNE

    from cnnviewer.engine.dataset.embedding import kmeans, reduce
    reduced = reduce(index.features(LAYER))
    perplexity = float(min(30.0, max(2.0, (len(reduced) - 1) / 3.0)))
    TSNE(n_components=2, init="pca", perplexity=perplexity, max_iter=750, random_state=0,
         n_jobs=threads).fit_transform(reduced)
    kmeans(reduced)


def bench_maps(sizes: list[int], work: Path, threads: list[int]) -> None:
    from threadpoolctl import threadpool_limits

    from cnnviewer.engine.dataset.embedding import dataset_map, kmeans, reduce
    from cnnviewer.engine.dataset.index import DatasetIndex
    print(f"\n3. map of {LAYER} (synthetic index; s; PCA-50 + t-SNE + k-means; target <= 30 s at 5,000)")
    head = "".join(f"{f'openTSNE t{t}':>13}" for t in threads) + "".join(f"{f'sklearn t{t}':>12}" for t in threads)
    print(f"  {'images':>7}{'PCA':>7}{'k-means':>9}{head}  faster")
    for count in sizes:
        index = DatasetIndex(synthetic_index(work / f"synthetic-{count}", count))
        with threadpool_limits(threads[0]):
            reduce(index.features(LAYER)[:100])    # imports, not timed
            features = index.features(LAYER)
            pca = timed(reduce, features) / 1000
            groups = timed(kmeans, reduce(features)) / 1000
        ours, theirs = [], []
        for t in threads:
            with threadpool_limits(t):
                ours.append(timed(dataset_map, index, LAYER, method="tsne", use_cache=False,
                                  threads=t) / 1000)
        for t in threads:
            with threadpool_limits(t):
                theirs.append(timed(sklearn_map, index, t) / 1000)
        best = "openTSNE" if min(ours) <= min(theirs) else "scikit-learn"
        print(f"  {count:>7}{pca:7.2f}{groups:9.2f}" + "".join(f"{s:13.1f}" for s in ours)
              + "".join(f"{s:12.1f}" for s in theirs)
              + f"  {best} ({max(min(ours), min(theirs)) / min(min(ours), min(theirs)):.1f}x); load {load()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 images indexed, 1k queries, a 150-image map")
    parser.add_argument("--images", type=int, default=None, help="images to index (default 5000; quick 24)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the forward (the app's job: 1)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader workers to compare")
    parser.add_argument("--mp-context", choices=["fork", "spawn"], default=None,
                        help="how workers start (default fork, as build_index; the app uses spawn)")
    parser.add_argument("--glibc-defaults", dest="keep_heap", action="store_false",
                        help="leave glibc's allocator as it is (the app and the CLI tune it, as both paths do here)")
    parser.add_argument("--map-10k", action="store_true", help="also map 10,000 images")
    parser.add_argument("--map-threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=15, help="warm query runs for the median")
    parser.add_argument("--skip", nargs="*", default=[], choices=["index", "queries", "maps"])
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (kept; default a new temp one)")
    args = parser.parse_args()
    args.images = args.images or (24 if args.quick else 5000)
    if args.quick:
        args.batch, args.workers, args.map_threads, args.runs = 8, args.workers[-1:], args.map_threads[:1], 3
    if args.keep_heap:
        keep_heap()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_dataset_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"scratch: {work}; {os.cpu_count()} CPUs; load average {load()}")
    started = time.perf_counter()
    if "index" not in args.skip:
        bench_indexing(args, work)
    if "queries" not in args.skip:
        bench_queries([1000] if args.quick else [1000, 5000, 10000], work, args.runs)
    if "maps" not in args.skip:
        bench_maps([150] if args.quick else [1000, 5000] + ([10000] if args.map_10k else []), work,
                   args.map_threads)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
