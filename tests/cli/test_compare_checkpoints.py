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


ARCH = '''from torch import nn
def Tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
def Dense():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
'''


def test_a_diverged_run_is_strict_json_and_a_dense_net_prints_a_table(tmp_path, capsys):
    """A NaN checkpoint's probability is null in JSON (never a bare NaN); a network whose output is not
    (batch, classes) has no top-1: the table says '—' instead of failing on it."""
    from cnnviewer.cli import main
    from cnnviewer.engine.models.loading import load_model
    torch.set_num_threads(1)
    (tmp_path / "arch.py").write_text(ARCH)
    Image.new("RGB", (48, 48), (120, 80, 40)).save(tmp_path / "image.png")
    for name in ("Tiny", "Dense"):
        folder = tmp_path / name
        folder.mkdir()
        state = load_model(f"{tmp_path / 'arch.py'}:{name}").module.state_dict()
        for k in range(2):
            moved = {key: value + 0.1 * k for key, value in state.items()}
            if name == "Tiny" and k == 1:
                moved["4.bias"] = torch.full_like(moved["4.bias"], float("nan"))   # diverged
            torch.save({"state_dict": moved, "epoch": k}, folder / f"epoch_{k}.pt")
    args = ["compare", str(tmp_path / "image.png"), "--checkpoints"]
    assert main([*args, str(tmp_path / "Tiny"), "--model", f"{tmp_path / 'arch.py'}:Tiny", "--json"]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(printed, parse_constant=lambda constant: pytest.fail(f"not JSON: {constant}"))["checkpoints"]
    assert rows[0]["probability"] > 0 and rows[1]["probability"] is None and rows[1]["logits_drift"] is None
    assert main([*args, str(tmp_path / "Dense"), "--model", f"{tmp_path / 'arch.py'}:Dense"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "2 checkpoints" in table[0] and table[-1].split()[:2] == ["epoch_1.pt", "1"] and table[-1].endswith("—")
