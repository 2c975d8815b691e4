"""Launch to first predictions: time the real `cnnviewer` command, start to finish.

Runs the app offscreen (or on $DISPLAY if set) with CNNVIEWER_LAUNCH_PROBE=1,
which makes it print when the window was shown and when the first predictions
were drawn, then quit. Times count from the command (the interpreter's own
start included); older versions that print only times from main() are read as such. Compares with a bare `import torch, torchvision, PySide6`
in the same run, since that import is the floor for any launch, and the window with a bare
PySide6 main window holding as many docks (a label each, the same tab groups), started the same way.

    .venv/bin/python benchmarks/bench_launch.py [--runs 3] [--quick]

--quick (tests/test_benchmarks.py): one run of each, offscreen.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def launch_once() -> dict[str, float]:
    env = dict(os.environ, CNNVIEWER_LAUNCH_PROBE="1", CNNVIEWER_OFFLINE="1")
    env.setdefault("QT_QPA_PLATFORM", "offscreen" if not env.get("DISPLAY") else "xcb")
    start, start_epoch = time.perf_counter(), time.time()
    out = subprocess.run([sys.executable, "-m", "cnnviewer"], env=env, capture_output=True,
                         text=True, timeout=120)
    total = time.perf_counter() - start
    line = next((l for l in out.stdout.splitlines() if l.startswith("window_shown_s=")), None)
    if line is None:
        raise SystemExit(f"no probe line; stderr:\n{out.stderr[-2000:]}")
    values = dict(item.split("=") for item in line.split())
    if "window_shown_epoch" in values:   # from the command, interpreter start included
        values["window_shown_s"] = float(values["window_shown_epoch"]) - start_epoch
        values["first_predictions_s"] = float(values["ready_epoch"]) - start_epoch
    return {"shown": float(values["window_shown_s"]), "ready": float(values["first_predictions_s"]),
            "process": total, "torch_at_show": values["torch_in_gui_thread_at_show"] == "True"}


# A bare PySide6 main window with the app's eleven docks (two in front, the rest tabbed), shown.
BARE_WINDOW = """
import sys, time
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDockWidget, QLabel, QMainWindow
app = QApplication(sys.argv[:1])
window = QMainWindow()
docks = []
for index in range({docks}):
    dock = QDockWidget(f"Panel {{index}}", window)
    dock.setObjectName(f"dock_{{index}}")
    dock.setWidget(QLabel(f"panel {{index}}"))
    area = Qt.DockWidgetArea.LeftDockWidgetArea if index in (0, 2) else Qt.DockWidgetArea.RightDockWidgetArea
    window.addDockWidget(area, dock)
    docks.append(dock)
for dock in docks[3:]:
    window.tabifyDockWidget(docks[1], dock)
window.resize(1280, 800)
window.show()
print(f"shown_epoch={{time.time():.3f}}", flush=True)
QTimer.singleShot(0, app.quit)
app.exec()
"""
DOCKS = 11


def bare_window() -> float:
    """Seconds from the command to a bare PySide6 main window with DOCKS docks shown."""
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen" if not env.get("DISPLAY") else "xcb")
    start_epoch = time.time()
    out = subprocess.run([sys.executable, "-c", BARE_WINDOW.format(docks=DOCKS)], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("shown_epoch="))
    return float(line.split("=")[1]) - start_epoch


def bare_imports() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, torchvision, PySide6.QtWidgets"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run of each, offscreen")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    if args.quick:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    # Byte-compiled first, as installing a wheel does: an editable checkout run with
    # PYTHONDONTWRITEBYTECODE (as here) would otherwise compile every module at every launch.
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(os.path.dirname(__file__), "..", "cnnviewer")],
                   check=True, capture_output=True)
    launches, imports, windows = [], [], []
    for _ in range(runs):            # interleaved, so machine noise hits all alike
        imports.append(bare_imports())
        windows.append(bare_window())
        launches.append(launch_once())
    shown = statistics.median(l["shown"] for l in launches)
    ready = statistics.median(l["ready"] for l in launches)
    floor = statistics.median(imports)
    bare = statistics.median(windows)
    print(f"runs: {runs}")
    print(f"window shown after the command              median {shown:6.2f} s")
    print(f"bare PySide6 window with {DOCKS} docks shown      median {bare:6.2f} s")
    print(f"window shown / bare window                   ratio  {shown / bare:6.2f}   (target <= 2)")
    print(f"first predictions drawn after the command   median {ready:6.2f} s")
    print(f"bare import torch+torchvision+PySide6        median {floor:6.2f} s")
    print(f"first predictions / bare imports             ratio  {ready / floor:6.2f}   (target <= 1.15)")
    print(f"torch imported on the GUI thread before show: {any(l['torch_at_show'] for l in launches)}")


if __name__ == "__main__":
    main()
