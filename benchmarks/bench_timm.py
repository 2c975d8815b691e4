"""Opening a timm model to its first prediction, against a torchvision model of similar size.

Each measurement is a fresh interpreter (cold imports, as a user's first open): import cnnviewer's
loader, build the model, run one prediction on the sample photo. Pairs, measured side by side:

- timm:efficientnet_b0 vs torchvision efficientnet_b0 (5.3 M parameters each, random weights);
- timm:tf_efficientnet_lite0 (offline pack, 4.7 M) vs mobilenet_v2 (offline pack, 3.5 M).

Also checks that a plain launch does not import timm (it is imported only when a timm model is
asked for or listed). Target from issue 11: timm / torchvision <= 1.2.

    .venv/bin/python benchmarks/bench_timm.py [--runs 3] [--quick]

--quick (tests/test_benchmarks.py): the Lite0 / MobileNetV2 pair once; no launch check (tests/cli/test_cli.py
makes it on every test run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

PAIRS = (("timm:efficientnet_b0", "efficientnet_b0"), ("timm:tf_efficientnet_lite0", "mobilenet_v2"))
SNIPPET = """
import time
started = time.perf_counter()
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.runtime.inference import predict
import torch
torch.set_num_threads(1)
model = load_model({spec!r})
predict(model, sample_image("chelsea"), 1)
print(f"seconds={{time.perf_counter() - started:.3f}}")
"""


def open_once(spec: str) -> float:
    env = dict(os.environ, CNNVIEWER_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", SNIPPET.format(spec=spec)], env=env, capture_output=True,
                         text=True, timeout=300)
    line = next((item for item in out.stdout.splitlines() if item.startswith("seconds=")), None)
    if line is None:
        raise SystemExit(f"{spec}: no timing; stderr:\n{out.stderr[-2000:]}")
    return float(line.split("=")[1])


def launch_imports_timm() -> bool:
    env = dict(os.environ, CNNVIEWER_LAUNCH_PROBE="1", CNNVIEWER_OFFLINE="1", QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-m", "cnnviewer"], env=env, capture_output=True, text=True, timeout=120)
    line = next((item for item in out.stdout.splitlines() if "timm_loaded=" in item), "")
    return "timm_loaded=True" in line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one pair, one run")
    args = parser.parse_args()
    pairs, runs = (PAIRS[1:], 1) if args.quick else (PAIRS, args.runs)
    for timm_spec, torchvision_spec in pairs:
        timm_times, tv_times = [], []
        for _ in range(runs):   # interleaved, so load on the machine hits both alike
            timm_times.append(open_once(timm_spec))
            tv_times.append(open_once(torchvision_spec))
        ratio = statistics.median(timm_times) / statistics.median(tv_times)
        print(f"{timm_spec:28s} {statistics.median(timm_times):6.2f} s   {torchvision_spec:18s} "
              f"{statistics.median(tv_times):6.2f} s   ratio {ratio:.2f} (target <= 1.2)")
    if args.quick:
        print("plain launch imports timm: not checked in --quick (tests/cli/test_cli.py checks it)")
    else:
        print(f"plain launch imports timm: {launch_imports_timm()} (should be False)")


if __name__ == "__main__":
    main()
