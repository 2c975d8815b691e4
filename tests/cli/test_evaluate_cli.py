"""`cnnviewer evaluate FOLDER`: a table or JSON of each method's mean ± sd, unreadable files skipped with a
count, and one-line errors with exit status 2. Real MobileNetV2 weights, real photos; 10-step curves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((256, 256)).save(folder / f"{name}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return folder


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_json_is_the_engine_table_and_says_what_was_skipped(folder, capsys, one_thread):
    from cnnviewer.cli import main

    assert main(["evaluate", str(folder), "--methods", "saliency", "grad-cam", "--metrics", "deletion",
                 "insertion", "--steps", "10", "--json"]) == 0
    captured = capsys.readouterr()
    found = json.loads(captured.out)
    assert found["images"] == 2 and found["target"] == "top-1" and found["steps"] == 10 and found["trained"]
    assert [row["method"] for row in found["methods"]] == ["saliency", "grad-cam"]
    assert found["skipped"][0][0] == "broken.jpg"
    assert "1 unreadable file skipped" in captured.err and len(captured.err.strip().splitlines()) == 1
    cam = found["methods"][1]["scores"]
    assert set(cam) == {"deletion", "insertion", "average-drop", "increase-in-confidence"}
    assert cam["deletion"]["better"] == "lower" and cam["insertion"]["better"] == "higher"
    assert cam["deletion"]["n"] == 2 and 0.0 <= cam["deletion"]["mean"] <= 1.0 and cam["deletion"]["sd"] >= 0.0
    assert "average-drop" not in found["methods"][0]["scores"]

    from cnnviewer.engine.attribution.evaluate import evaluate_images
    from cnnviewer.engine.models.loading import load_model
    from cnnviewer.engine.workbench import Workbench
    model = load_model("mobilenet_v2")
    again = evaluate_images(Workbench(), model, [folder / "chelsea.jpg", folder / "coffee.jpg"],
                            methods=("grad-cam",), metrics=("deletion", "insertion"), steps=10)
    assert cam["insertion"]["mean"] == pytest.approx(again.methods[0].mean("insertion"), rel=1e-5)
    assert cam["insertion"]["sd"] == pytest.approx(again.methods[0].sd("insertion"), rel=1e-4, abs=1e-7)


def test_the_table_in_a_real_process(folder):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CNNVIEWER_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "cnnviewer", "evaluate", str(folder), "--methods", "grad-cam",
                             "--metrics", "deletion", "--steps", "10", "--limit", "1", "--target-class", "285"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("mobilenet_v2: 1 images, target class 285 (Egyptian cat), 10 steps")
    assert lines[1].split()[:3] == ["method", "deletion", "AUC"] and "↓" in lines[1]
    assert "Average Drop ↓" in lines[1] and "Increase in Confidence ↑" in lines[1]
    row = lines[2].split()
    assert row[0] == "grad-cam" and row[2] == "±" and float(row[3]) == 0.0    # one image: sd 0
    assert lines[-1].startswith("↓ lower is better, ↑ higher is better")
    assert result.stderr.strip().splitlines() == [    # --limit counts readable images: broken.jpg comes first
        "cnnviewer: note: 1 unreadable file skipped (first: broken.jpg: corrupt or truncated image (Truncated File Read))"]


@pytest.mark.parametrize("argv, said", [
    (["evaluate", "{missing}"], "not a folder"),
    (["evaluate", "{empty}"], "no image files in this folder"),
    (["evaluate", "{folder}", "--methods", "magic"], "invalid choice: 'magic'"),
    (["evaluate", "{folder}", "--metrics", "accuracy"], "invalid choice: 'accuracy'"),
    (["evaluate", "{folder}", "--steps", "1"], "out of range"),
    (["evaluate", "{broken}", "--methods", "saliency"], "no readable image among 1 file"),
])
def test_errors_are_one_line_and_exit_2(argv, said, folder, tmp_path, capsys, one_thread):
    from cnnviewer.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    names = {"missing": tmp_path / "nowhere", "empty": tmp_path / "empty", "folder": folder,
             "broken": tmp_path / "broken"}
    assert main([part.format(**names) for part in argv]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv", [["evaluate", "--help"], ["evaluate", ".", "--methods", "magic"]])
def test_help_and_usage_errors_load_no_torch(argv):
    code = ("import sys\nfrom cnnviewer.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'PySide6') if m in sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr
    assert "--target-class" in result.stdout if "--help" in argv else "invalid choice: 'magic'" in result.stderr
