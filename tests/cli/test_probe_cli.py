"""`cnnviewer probe IMAGE|FOLDER`: JSON that is the engine's result, a folder's mean and Zhang
consistency, unreadable files skipped, and one-line errors with exit status 2. Real MobileNetV2
weights (offline), real photos; a few layers keep it short."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")

LAYERS = ["features.0.0", "features.18", "classifier.1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(data, name)()).convert("RGB").save(folder / f"{name}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_one_image_json_is_the_engine_result(folder, capsys):
    from cnnviewer.cli import main
    from cnnviewer.engine.experiments.equivariance import probe
    from cnnviewer.engine.media.images import load_image
    from cnnviewer.engine.models.loading import load_model

    assert main(["probe", str(folder / "chelsea.jpg"), "--amounts", "2", "4", "--layers", *LAYERS,
                 "--json", "-"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["layers"] == LAYERS and found["amounts"] == [2.0, 4.0] and found["images"] == 1
    engine = probe(load_model("mobilenet_v2"), load_image(folder / "chelsea.jpg"), "shift", [2, 4], layers=LAYERS)
    np.testing.assert_allclose(np.array(found["invariance_cosine"], float), engine.invariance, atol=1e-5)
    assert found["equivariance_error"][0][0] <= 1e-5          # features.0.0, 2 px: its jump
    assert found["equivariance_error"][2] == [None, None]     # the logits have no map
    assert found["top1_labels"][0] == "Egyptian cat"


def test_folder_gives_the_mean_and_the_consistency_and_a_table(folder, capsys, tmp_path):
    from cnnviewer.cli import main

    out = tmp_path / "probe.json"
    assert main(["probe", str(folder), "--transform", "flip", "--layers", *LAYERS, "--pairs", "2",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "1 unreadable file(s) skipped" in printed.err
    assert "consistency (Zhang 2019)" in printed.out and "features.18" in printed.out
    found = json.loads(out.read_text())
    assert found["images"] == 2 and found["consistency"]["pairs"] == 4
    assert 0.0 <= found["consistency"]["value"] <= 1.0
    assert len(found["top1"]) == 2 and found["transform"] == "flip"


@pytest.mark.parametrize("argv, words", [
    (["probe", "/no/such/photo.jpg"], "no such file"),
    (["probe", "{img}", "--layers", "nope"], "no layer named 'nope'"),
    (["probe", "{img}", "--transform", "shear"], "invalid choice"),
    (["probe", "{img}", "--transform", "rotate", "--boundary", "wrap"], "wrap applies to shifts"),
    (["probe", "{broken}"], "broken.jpg"),
    (["probe", "{img}", "--amounts", "inf"], "finite"),                     # was a traceback
    (["probe", "{img}", "--amounts", "10000000"], "shifts between -224 and 224"),   # was a huge allocation
    (["probe", "{img}", "--transform", "scale", "--amounts", "0.000001"], "between 0.1 and 10"),
])
def test_errors_are_one_line_with_status_2(folder, capsys, argv, words):
    from cnnviewer.cli import main

    argv = [a.format(img=folder / "chelsea.jpg", broken=folder / "broken.jpg") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


def test_a_folder_of_class_subfolders_is_probed_like_the_lesion_study_reads_it(folder, capsys, tmp_path):
    import shutil

    from cnnviewer.cli import main

    (tmp_path / "cats").mkdir()
    shutil.copy(folder / "chelsea.jpg", tmp_path / "cats" / "chelsea.jpg")
    out = tmp_path / "probe.json"
    assert main(["probe", str(tmp_path), "--transform", "flip", "--layers", *LAYERS, "--pairs", "1",
                 "--json", str(out)]) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["images"] == 1
