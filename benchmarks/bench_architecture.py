"""Architecture panel: graph build + layout + first draw, for resnet50 and densenet121.

Times each stage in one run (offscreen Qt, one torch thread as in the app):
summary + torch.fx graph (engine), igraph layout (all blocks open, and as the panel first
opens: big models folded), and drawing the scene items. Target (issue 3): <= 2 s in total
for densenet121 with every block open.

    .venv/bin/python benchmarks/bench_architecture.py [--quick]

--quick (tests/test_benchmarks.py): resnet18 alone through the same stages; its figures are "info".
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CNNVIEWER_OFFLINE", "1")

import torch  # noqa: E402
import torchvision  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from cnnviewer.engine.jobs import JobRunner  # noqa: E402
from cnnviewer.engine.session import Session  # noqa: E402
from cnnviewer.engine.structure.architecture import default_collapsed, layout  # noqa: E402
from cnnviewer.engine.structure.architecture_graph import build_graph  # noqa: E402
from cnnviewer.engine.structure.summary_graph import summarize  # noqa: E402
from cnnviewer.ui.jobs import UiJobs  # noqa: E402
from cnnviewer.ui.panels.architecture import ArchitecturePanel  # noqa: E402

TARGET_S = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="resnet18 only: a few seconds, same stages")
    quick = parser.parse_args().quick
    torch.set_num_threads(1)
    app = QApplication.instance() or QApplication([])
    jobs = UiJobs(JobRunner(torch_threads=None))
    panel = ArchitecturePanel(Session(), jobs, lambda: None)
    panel.resize(900, 700)
    print(f"{'model':<13}{'view':<8}{'nodes':>6}{'edges':>7}{'graph s':>9}{'layout s':>10}{'draw s':>8}{'total s':>9}  verdict")
    for name in ("resnet18",) if quick else ("resnet50", "densenet121"):
        model = torchvision.models.get_model(name, weights=None).eval()
        start = time.perf_counter()
        graph = build_graph(model, summarize(model, (224, 224)))
        built = time.perf_counter() - start
        for view, collapsed in (("open", frozenset()), ("first", default_collapsed(graph))):
            start = time.perf_counter()
            placed = layout(graph, collapsed)
            laid = time.perf_counter() - start
            start = time.perf_counter()
            panel._on_graph_ready((graph, placed))
            app.processEvents()
            panel.view.viewport().grab()           # make Qt paint the scene once
            drawn = time.perf_counter() - start
            total = built + laid + drawn
            verdict = ("PASS" if total <= TARGET_S else "FAIL") if name == "densenet121" else "info"
            print(f"{name:<13}{view:<8}{len(placed.nodes):>6}{len(placed.edges):>7}{built:>9.2f}{laid:>10.2f}"
                  f"{drawn:>8.2f}{total:>9.2f}  {verdict}")
    jobs.runner.close()


if __name__ == "__main__":
    main()
