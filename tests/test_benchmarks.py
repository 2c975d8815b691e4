"""Benchmarks rot silently (an import moved, a scenario renamed): run each one's --quick mode.

Every script in benchmarks/ takes --quick: the same code paths at tiny sizes, a few seconds,
still printing its side-by-side figures. A new benchmark without a quick mode, or without its
figures listed in FIGURES, fails here. Most of a quick run is one thread importing torch, so the
selected benchmarks run two at a time (slowest first): the file takes about half as long.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(path.name for path in (ROOT / "benchmarks").glob("*.py") if not path.name.startswith("_"))
NUMBER = r"-?\d+(?:\.\d+)?"

# Per benchmark, the lines its quick mode must print (regular expressions, searched line by line).
FIGURES: dict[str, list[str]] = {
    "bench_architecture.py": [rf"^resnet18\s+open\s+\d+\s+\d+(\s+{NUMBER}){{4}}",
                              rf"^resnet18\s+first\s+\d+\s+\d+(\s+{NUMBER}){{4}}"],
    "bench_cams.py": [rf"^resnet18\s+{m}(\s+{NUMBER}){{3}}\s+({NUMBER}\s+{NUMBER}|nan\s+nan)\s+(PASS|FAIL) (PASS|FAIL|n/a)" for m in ("grad-cam", r"grad-cam\+\+", "score-cam", "layer-cam", "eigen-cam")],
    "bench_dataset.py": [rf"build_index workers=1 .* index/plain {NUMBER}",
                         rf"^\s+1000(\s+{NUMBER}){{5}}\s+load",
                         rf"^\s+150(\s+{NUMBER}){{4}}\s+(openTSNE|scikit-learn) \({NUMBER}x\)"],
    "bench_dataset_memory.py": [rf"48 images in {NUMBER} s", rf"peak {NUMBER} GiB"],
    "bench_faithfulness.py": [rf"^deletion\+insertion \d+ steps\s+first map .* ratio {NUMBER}\s+next maps .* ratio {NUMBER} .*(PASS|FAIL)$", rf"^ROAD \d+ percentiles .* ratio ({NUMBER}|nan) .*(PASS|FAIL|n/a)$"],
    "bench_segmentation_models.py": [rf"^lraspp_mobilenet_v3_large\s+128(\s+{NUMBER}){{4}}$"],
    "bench_sanity.py": [rf"^4 methods(\s+{NUMBER}){{3}}\s+(PASS|FAIL)", rf"^\d+ stages(\s+{NUMBER}){{3}}\s+(PASS|FAIL)"],
    "bench_evaluate.py": [rf"^folder\s+\d+ images\s+{NUMBER} images/s\s+forward {NUMBER} ms/image\s+ratio {NUMBER}",
                          rf"^cached second call\s+{NUMBER} ms"],
    "bench_foundation.py": [rf"^1 thread\s+mobilenet_v2(\s+{NUMBER}){{4}}\s+fx",
                            rf"^1 thread\s+mobilenet_v2\s+features\.18\s.*{NUMBER}\s+{NUMBER}\s+(PASS|FAIL)",
                            rf"wall s: first {NUMBER}", r"top-1 '[^']+'"],
    "bench_gradients.py": [rf"^{name}(\s+{NUMBER}){{8}}\s+(PASS|FAIL)" for name in ("resnet18", "mobilenet_v2")],
    "bench_launch.py": [rf"window shown after the command\s+median\s+{NUMBER} s",
                        rf"window shown / bare window\s+ratio\s+{NUMBER}",
                        rf"first predictions / bare imports\s+ratio\s+{NUMBER}",
                        r"torch imported on the GUI thread before show: False"],
    "bench_show.py": [rf"^window shown show / launch\s+ratio\s+{NUMBER}", rf"^first predictions show / launch\s+ratio\s+{NUMBER}",
                      r"torch imported on the GUI thread by the window: launch False"],
    "bench_importance.py": [rf"^mobilenet_v2\s+{layer}\s+\d+(\s+{NUMBER}){{5}}\s+\d+(\s+({NUMBER}|nan)){{2}}\s+(PASS|FAIL)"
                            for layer in (r"features\.4", r"features\.14", r"features\.17")],
    "bench_lesion.py": [rf"^{name}\s+N=\d+ B=\d+\s+study {NUMBER} s\s+N·B plain forwards {NUMBER} s\s+ratio {NUMBER}\s+(PASS|FAIL)"
                        for name in ("mobilenet_v2", "timm:tf_efficientnet_lite0")]
                       + [rf"^features\.3\s+identity\s+24×56×56 → 24×56×56\s+{NUMBER}$",
                          r"^features\.4\s+none\s+.*—\s+changes resolution 56→28 and channels 24→32",
                          rf"^random deletions \(\d+ draws each\)\s+k=1: {NUMBER} ± {NUMBER}"],
    "bench_checkpoints.py": [rf"^slider to adjacent, cold \(first visit\)\s+{NUMBER}\s+{NUMBER}\s+\d+$",
                             rf"^plain reload of the same weights\s+{NUMBER}\s+{NUMBER}\s+\d+$",
                             rf"^cold / plain reload ratio {NUMBER}\s+warm / plain ratio {NUMBER}\s+cold median {NUMBER} s <= 0.5 s: (PASS|FAIL)$"],
    "bench_checkpoint_drift.py": [rf"^drift pass after one arrival\s+{NUMBER}$", rf"^one slider load \(cold\)\s+{NUMBER}$",
                                  rf"^scratch / arrival ratio {NUMBER}\s+scratch / slider load ratio {NUMBER}$"],
    "bench_class_map.py": [rf"^upsampling .* all classes {NUMBER} ms\s+per block {NUMBER} ms\s+ratio {NUMBER}\s+same labels True",
                           rf"^redraw \d+x\d+\s+legend click {NUMBER} ms\s+opacity {NUMBER} ms\s+blend again {NUMBER} ms"
                           rf"\s+ratio {NUMBER}\s+(PASS|FAIL)"],
    "bench_onnx.py": [rf"^mobilenet_v2 legacy open onnx {NUMBER} s\s+open torch {NUMBER} s\s+ratio {NUMBER}",
                      rf"^mobilenet_v2 legacy forward batch 8\s+onnx {NUMBER} ms\s+torch {NUMBER} ms\s+ratio {NUMBER}"
                      rf"\s+max \|dlogit\| {NUMBER}e[-+]\d+$"],
    "bench_knockout.py": [rf"^{case}(\s+{NUMBER}){{6}}\s+(PASS|FAIL)$"
                          for case in ("conv 2 channels", "block 80 channels", "5 layers")],
    "bench_live.py": [rf"^{name}: raw {NUMBER} frames/s, pipeline {NUMBER} frames/s, ratio {NUMBER}.*stall {NUMBER} ms"
                      for name in ("ssdlite320_mobilenet_v3_large", "mtcnn")],
    "bench_live_segmentation.py": [rf"^{name}: raw {NUMBER} frames/s, pipeline {NUMBER} frames/s, ratio {NUMBER}.*"
                                   rf"stall {NUMBER} ms.* (PASS|FAIL)$"
                                   for name in ("lraspp_mobilenet_v3_large", r"mobilenet_v2 \(fully convolutional\)")],
    "bench_probe.py": [rf"^probe 8 shifts all layers {NUMBER} ms\s+8 plain forwards {NUMBER} ms\s+ratio {NUMBER}\s+target <= 2\s+(PASS|FAIL)$",
                       rf"^features\.0\.0 error at 2 px {NUMBER}(e[-+]\d+)?\s"],
    "bench_receptive_field.py": [rf"^{layer}(\s+{NUMBER}){{3}}\s+(PASS|FAIL)"
                                 for layer in ("layer1", "layer2", "layer3", "layer4")],
    "bench_stalls.py": [rf"^{name}(\s+{NUMBER}){{4}}$" for name in ("image", "gradients", "synthesis")],
    "bench_style.py": [rf"^coffee/gravel\s+style loss fell\s+{NUMBER}x .* (PASS|FAIL)$", r"^\d/1 pairs pass"],
    "bench_synthesis.py": [rf"mobilenet_v2 features\.10\s+{NUMBER}\s+{NUMBER}",
                           rf"^\s+fourier \+ transforms\s+\d+/1\s+\d+/1\s+{NUMBER}\s+{NUMBER}",
                           rf"one batch as facets run it .* ratio {NUMBER}"],
    "bench_timm.py": [rf"timm:tf_efficientnet_lite0\s+{NUMBER} s\s+mobilenet_v2\s+{NUMBER} s\s+ratio {NUMBER}"],
}


SLOW_FIRST = ("bench_dataset.py", "bench_synthesis.py", "bench_foundation.py", "bench_timm.py")


def run_quick(name: str, scratch: Path) -> subprocess.CompletedProcess[str]:
    """One benchmark's quick mode; its scratch files, settings and caches stay under `scratch`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen", "CNNVIEWER_OFFLINE": "1",
           "TMPDIR": str(scratch), "XDG_CONFIG_HOME": str(scratch / "config"), "XDG_CACHE_HOME": str(scratch / "cache")}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def quick_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The quick runs of the benchmarks selected in this session, two at a time, slowest first."""
    selected = {item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_quick_mode_runs_and_prints_its_figures"}
    order = sorted(sorted(selected), key=lambda name: SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST))
    pool = ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1))
    yield {name: pool.submit(run_quick, name, tmp_path_factory.mktemp(name.removesuffix(".py"))) for name in order}
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_mode_runs_and_prints_its_figures(name: str, quick_runs: dict[str, Future]) -> None:
    """Exit 0 and every expected figure printed."""
    if name not in FIGURES:
        pytest.fail(f"list in FIGURES what `benchmarks/{name} --quick` must print")
    result = quick_runs[name].result()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    missing = [pattern for pattern in FIGURES[name] if not re.search(pattern, result.stdout, re.MULTILINE)]
    assert not missing, f"not printed: {missing}\n{result.stdout[-3000:]}"
