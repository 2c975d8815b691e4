"""`cnnviewer lesion FOLDER`: the per-block table and the random curve, accuracy from subfolder names, JSON to
a file or stdout equal to the engine's result, and one-line errors with exit status 2. Real MobileNetV2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("classes")
    for sub, name in (("Egyptian_cat", "chelsea"), ("espresso", "coffee")):
        (folder / sub).mkdir()
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((256, 256)).save(folder / sub / f"{name}.jpg")
    (folder / "espresso" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return folder


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_table_json_and_accuracy_from_subfolders(folder, tmp_path, capsys, one_thread):
    from cnnviewer.cli import main

    out = tmp_path / "lesion.json"
    assert main(["lesion", str(folder), "--random", "2", "--repeats", "2", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("mobilenet_v2: 2 images") and "intact accuracy" in lines[0]
    assert "1 unreadable file skipped" in captured.err
    row = next(line for line in lines if line.startswith("features.3 "))
    assert row.split()[1] == "identity" and 0.0 <= float(row.split()[2]) <= 1.0
    assert "changes resolution 56→28 and channels 24→32" in next(line for line in lines
                                                               if line.startswith("features.4 "))
    assert any(line.strip().startswith("2 blocks  agreement") for line in lines)
    found = json.loads(out.read_text())
    assert found["images"] == 2 and found["skipped"][0][0].endswith("broken.jpg")
    assert [r["count"] for r in found["random"]] == [1, 2] and len(found["random"][1]["subsets"]) == 2
    table = {b["name"]: b for b in found["blocks"]}
    assert float(row.split()[2]) == pytest.approx(table["features.3"]["agreement"], abs=5e-4)
    assert table["features.4"]["agreement"] is None and table["features.3"]["accuracy"] is not None

    from cnnviewer.engine.experiments.lesion import lesion_study
    from cnnviewer.engine.models.loading import load_model
    images = [folder / "Egyptian_cat" / "chelsea.jpg", folder / "espresso" / "coffee.jpg"]
    again = lesion_study(load_model("mobilenet_v2"), images, labels=[285, 967], random_counts=(1, 2), repeats=2)
    assert found["intact_accuracy"] == pytest.approx(again.intact_accuracy)
    assert [b["agreement"] for b in found["blocks"]] == [b.agreement for b in again.per_block]
    assert [b["accuracy"] for b in found["blocks"]] == [b.accuracy for b in again.per_block]

    assert main(["lesion", str(folder), "--random", "0", "--limit", "1", "--json", "-"]) == 0
    streamed = json.loads(capsys.readouterr().out)
    assert streamed["images"] == 1 and streamed["random"] == []


@pytest.mark.parametrize("argv, message", [
    (["lesion", "/no/such/folder"], "not a folder"),
    (["lesion", "{empty}"], "no image files"),
    (["lesion", "{folder}", "--random", "-1"], "out of range"),
    (["lesion", "{folder}", "--json", "/no/such/folder/out.json"], "does not exist"),
    (["lesion", "{folder}", "--model", "squeezenet1_0"], "no residual block with a skip connection"),
])
def test_one_line_errors(argv, message, folder, tmp_path, capsys):
    from cnnviewer.cli import main

    (tmp_path / "empty").mkdir()
    argv = [a.format(folder=folder, empty=tmp_path / "empty") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_help_loads_neither_torch_nor_qt():
    import subprocess
    import sys
    code = ("import sys\nfrom cnnviewer.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'PySide6') if m in sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, "lesion", "--help"], capture_output=True, text=True, check=False,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert "--repeats" in result.stdout and result.stderr.strip().splitlines()[-1] == "[]", result.stderr
