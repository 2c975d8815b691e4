"""`cnnviewer.show(model)` against the app's own launch with the same model, side by side.

(a) show: a fresh Python process imports torch, torchvision and cnnviewer and builds MobileNetV2
    with its ImageNet weights (as a notebook holds it), then times `cnnviewer.show(net)` from the
    call to the window shown and to the first predictions drawn.
(b) launch: `cnnviewer --model mobilenet_v2` from the command to the same two points.
Both print through the app's launch probe (CNNVIEWER_LAUNCH_PROBE, as bench_launch.py), which closes
the window after the first predictions; runs alternate (a, b, a, b, ...) so machine noise hits both.
The issue's goal: show ÷ launch ≤ 1 for the window shown.

    .venv/bin/python benchmarks/bench_show.py [--runs 5] [--quick]

--quick (tests/test_benchmarks.py): one run of each, offscreen.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SHOW = """
import time, torch, torchvision
torch.set_num_threads(1)
import cnnviewer
from cnnviewer.engine.models.loading import load_model
net = torchvision.models.mobilenet_v2()
net.load_state_dict(load_model("mobilenet_v2").module.state_dict())
net.train()
print(f"call_epoch={time.time():.3f}", flush=True)
cnnviewer.show(net, block=True)   # the launch probe closes the window after the first predictions
"""


def _probe(out: subprocess.CompletedProcess[str], what: str) -> dict[str, float]:
    line = next((l for l in out.stdout.splitlines() if l.startswith("window_shown_s=")), None)
    if line is None:
        raise SystemExit(f"{what}: no probe line; stderr:\n{out.stderr[-2000:]}")
    return {key: float(value) if value[0].isdigit() else value == "True"
            for key, value in (item.split("=") for item in line.split())}


def _env() -> dict[str, str]:
    env = dict(os.environ, CNNVIEWER_LAUNCH_PROBE="1", CNNVIEWER_OFFLINE="1")
    env.setdefault("QT_QPA_PLATFORM", "offscreen" if not env.get("DISPLAY") else "xcb")
    return env


def show_once() -> dict[str, float]:
    """(a): from the show() call (torch and the model already in memory)."""
    out = subprocess.run([sys.executable, "-c", SHOW], env=_env(), capture_output=True, text=True, timeout=300)
    values = _probe(out, "show")
    call = float(next(l for l in out.stdout.splitlines() if l.startswith("call_epoch=")).split("=")[1])
    return {"shown": values["window_shown_epoch"] - call, "ready": values["ready_epoch"] - call,
            "torch_at_show": values["torch_in_gui_thread_at_show"]}


def launch_once() -> dict[str, float]:
    """(b): from the `cnnviewer --model mobilenet_v2` command (the interpreter's start included)."""
    start_epoch = time.time()
    out = subprocess.run([sys.executable, "-m", "cnnviewer", "--model", "mobilenet_v2"], env=_env(),
                         capture_output=True, text=True, timeout=300)
    values = _probe(out, "launch")
    return {"shown": values["window_shown_epoch"] - start_epoch, "ready": values["ready_epoch"] - start_epoch,
            "torch_at_show": values["torch_in_gui_thread_at_show"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run of each, offscreen")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    if args.quick:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    # Byte-compiled first, as an installed wheel is (bench_launch.py does the same).
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(os.path.dirname(__file__), "..", "cnnviewer")],
                   check=True, capture_output=True)
    shows, launches = [], []
    for _ in range(runs):
        shows.append(show_once())
        launches.append(launch_once())
    median = {f"{name}_{point}": statistics.median(r[point] for r in results)
              for name, results in (("show", shows), ("launch", launches)) for point in ("shown", "ready")}
    print(f"runs: {runs} each, alternating; mobilenet_v2, CPU")
    print(f"show(): call to window shown          median {median['show_shown']:6.2f} s")
    print(f"launch: command to window shown       median {median['launch_shown']:6.2f} s")
    print(f"window shown show / launch            ratio  {median['show_shown'] / median['launch_shown']:6.2f}"
          "   (goal <= 1)")
    print(f"show(): call to first predictions     median {median['show_ready']:6.2f} s")
    print(f"launch: command to first predictions  median {median['launch_ready']:6.2f} s")
    print(f"first predictions show / launch       ratio  {median['show_ready'] / median['launch_ready']:6.2f}"
          "   (goal <= 1)")
    print(f"torch imported on the GUI thread by the window: launch {any(r['torch_at_show'] for r in launches)}"
          " (show: the caller's own import)")


if __name__ == "__main__":
    main()
