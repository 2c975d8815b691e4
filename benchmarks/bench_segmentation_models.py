"""torchvision's segmentation networks: time and memory of the recorded pass at each square size.

Every panel reads the recorded pass (every module's output kept, engine/runtime/recording.py), so
its memory and time decide the square each model is fed (segmentation.models.SQUARE_SIZES). Per
model and side: a plain forward (ms, best of `--rounds`), the recorded pass (ms, best of rounds),
their ratio, and the GiB of distinct tensors the recorded pass keeps. Random weights (no weights
offline; the cost does not depend on them), one torch thread.

    .venv/bin/python benchmarks/bench_segmentation_models.py [--models fcn_resnet101,...] [--sides 520,384]

--quick (tests/test_benchmarks.py): lraspp_mobilenet_v3_large at 128 px, one round.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from cnnviewer.engine.runtime.recording import capture_activations  # noqa: E402
from cnnviewer.engine.segmentation.models import build  # noqa: E402


def kept_bytes(recorded) -> int:
    """Bytes of the distinct storages the recorded pass holds (views of one storage count once)."""
    seen: dict[int, int] = {}
    for name in recorded:
        tensor = recorded[name]
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def best_ms(run, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fcn_resnet101,deeplabv3_resnet101,lraspp_mobilenet_v3_large")
    parser.add_argument("--sides", default="520,448,384,320")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.models, args.sides, args.rounds = "lraspp_mobilenet_v3_large", "128", 1
    torch.set_num_threads(1)
    print(f"{'model':30s} {'side':>5s} {'plain ms':>9s} {'recorded ms':>12s} {'ratio':>6s} {'kept GiB':>9s}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        module = build(name).eval()
        for side in (int(s) for s in args.sides.split(",")):
            inputs = torch.randn(1, 3, side, side)
            with torch.inference_mode():
                plain = best_ms(lambda: module(inputs), args.rounds)
            capture_activations(module, inputs)            # trace and verify the recorder once
            recorded = best_ms(lambda: capture_activations(module, inputs), args.rounds)
            _, activations = capture_activations(module, inputs)
            gib = kept_bytes(activations) / 2**30
            del activations
            print(f"{name:30s} {side:5d} {plain:9.0f} {recorded:12.0f} {recorded / plain:6.2f} {gib:9.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
