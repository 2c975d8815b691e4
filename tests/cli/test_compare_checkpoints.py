"""`cnnviewer compare IMAGE --checkpoints DIR`: a real process over real checkpoints of MobileNetV2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from skimage import data

from cnnviewer.engine.models.loading import load_model


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CNNVIEWER_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "cnnviewer", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_drift_per_checkpoint_as_json_and_as_a_table(tmp_path):
    torch.set_num_threads(1)
    image = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(image)
    model = load_model("mobilenet_v2")
    state = model.module.state_dict()
    params = dict(model.module.named_parameters())
    generator = torch.Generator().manual_seed(0)
    noise = {k: 0.01 * float(v.std()) * torch.randn(v.shape, generator=generator) if k in params and v.numel() > 1
             else None for k, v in state.items()}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for k, name in enumerate(("step0.pt", "step500.pt", "step1000.pt")):
        torch.save({key: v + k * noise[key] if noise[key] is not None else v for key, v in state.items()}, run_dir / name)
    (run_dir / "step750.pt").write_bytes(b"\x80\x02 truncated pickle")

    result = run("compare", str(image), "--checkpoints", str(run_dir), "--model", "mobilenet_v2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = report["checkpoints"]
    assert report["architecture"] == "mobilenet_v2"
    assert [r["file"] for r in rows] == ["step0.pt", "step500.pt", "step750.pt", "step1000.pt"]
    assert [r["step"] for r in rows] == [0, 500, 750, 1000]
    assert rows[2]["error"] and "step750.pt" in rows[2]["error"] and rows[2]["weights_vs_first"] is None
    good = [rows[0], rows[1], rows[3]]
    assert good[0]["weights_vs_first"] == 0.0 and good[0]["weights_vs_previous"] is None
    assert good[2]["weights_vs_first"] == pytest.approx(2 * good[1]["weights_vs_first"], rel=1e-4)   # linear in k
    assert good[2]["weights_vs_previous"] == pytest.approx(good[1]["weights_vs_first"], rel=1e-3)
    assert 0.0 == good[0]["logits_drift"] < good[1]["logits_drift"] < good[2]["logits_drift"]
    assert good[0]["top1"] == "Egyptian cat" and 0.5 < good[0]["probability"] < 1.0

    table = run("compare", str(image), "--checkpoints", str(run_dir), "--model", "mobilenet_v2")
    assert table.returncode == 0, table.stderr
    assert "4 checkpoints of mobilenet_v2" in table.stdout
    assert "step750.pt" in table.stdout and "unreadable" in table.stdout and "Egyptian cat" in table.stdout

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing")
    for folder in (empty, tmp_path / "missing"):
        failed = run("compare", str(image), "--checkpoints", str(folder))
        assert failed.returncode == 2 and failed.stdout == ""
        assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr
    window = run("--checkpoints", str(tmp_path / "missing"))          # the window's own option: checked first
    assert window.returncode == 2 and window.stderr.strip() == f"error: cnnviewer: {tmp_path / 'missing'}: not a folder (no such folder)"
