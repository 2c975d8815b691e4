"""Opening an ONNX file and running it, against the PyTorch model it was exported from.

MobileNetV2 with its real offline weights is exported with torch.onnx (the legacy exporter; the dynamo
exporter too without --quick), then, side by side on one thread, interleaved so machine load hits both:

- open: `load_model("net.onnx")` (read, vet, repair, convert with onnx2torch, rename the layers) against
  `load_model("mobilenet_v2")` (build torchvision's model, load the offline weights);
- forward: the converted torch.fx graph against torchvision's module, one 224x224 image, and a batch of 8
  (the dataset indexer's way), with the largest logit difference.

    .venv/bin/python benchmarks/bench_onnx.py [--runs 5] [--quick]

--quick (tests/test_benchmarks.py): the legacy export only, 2 opens and 5 forwards each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from cnnviewer.engine.models.loading import load_model


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def side_by_side(first, second, runs: int) -> tuple[float, float]:
    """Medians of `runs` interleaved timings of two calls."""
    a, b = [], []
    for _ in range(runs):
        a.append(timed(first))
        b.append(timed(second))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="legacy export only, few runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    opens, forwards = (2, 5) if args.quick else (args.runs, args.runs * 6)
    reference = load_model("mobilenet_v2")
    with tempfile.TemporaryDirectory() as folder:
        exporters = ("legacy",) if args.quick else ("legacy", "dynamo")
        for exporter in exporters:
            path = Path(folder) / f"{exporter}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_s = timed(lambda: torch.onnx.export(reference.module, (torch.zeros(1, 3, 224, 224),),
                                                           str(path), dynamo=exporter == "dynamo"))
            onnx_s, torch_s = side_by_side(lambda: load_model(str(path)), lambda: load_model("mobilenet_v2"), opens)
            print(f"mobilenet_v2 {exporter:6s} open onnx {onnx_s:.3f} s   open torch {torch_s:.3f} s   "
                  f"ratio {onnx_s / torch_s:.2f}   (export {export_s:.1f} s)")
            converted = load_model(str(path))
            for batch in (1, 8):
                images = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
                with torch.inference_mode():
                    gap = float((converted.module(images) - reference.module(images)).abs().max())
                    onnx_f, torch_f = side_by_side(lambda: converted.module(images), lambda: reference.module(images),
                                                   forwards if batch == 1 else max(2, forwards // 4))
                print(f"mobilenet_v2 {exporter:6s} forward batch {batch}   onnx {onnx_f * 1000:.1f} ms   "
                      f"torch {torch_f * 1000:.1f} ms   ratio {onnx_f / torch_f:.2f}   max |dlogit| {gap:.1e}")


if __name__ == "__main__":
    main()
