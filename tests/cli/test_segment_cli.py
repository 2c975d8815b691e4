"""`cnnviewer segment IMAGE --fully-convolutional` (issue 25) with the real MobileNetV2: the overlay at
the image's size, the classes' areas in JSON (a cat and coffee side by side), one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from cnnviewer.cli import main


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_overlay_and_areas_of_a_cat_beside_coffee(tmp_path, capsys):
    both = Image.new("RGB", (800, 300))
    both.paste(Image.fromarray(data.chelsea()).resize((400, 300)), (0, 0))
    both.paste(Image.fromarray(data.coffee()).resize((400, 300)), (400, 0))
    source, out, table = tmp_path / "both.png", tmp_path / "map.png", tmp_path / "map.json"
    both.save(source)
    assert main(["segment", str(source), "--fully-convolutional", "-o", str(out), "--json", str(table)]) == 0, \
        capsys.readouterr().err
    drawn = np.asarray(Image.open(out))
    assert drawn.shape == (300, 800, 3) and not np.array_equal(drawn, np.asarray(both))
    report = json.loads(table.read_text())
    classes = [row["class"] for row in report["classes"]]
    assert sum(row["pixels"] for row in report["classes"]) == 300 * 800
    assert set(classes[:4]) & {281, 282, 283, 284, 285} and set(classes[:4]) & {967, 968, 504}, classes[:6]
    assert all(0.0 < row["mean_probability"] <= 1.0 for row in report["classes"])
    assert report["trained"] is True and report["model"] == "mobilenet_v2"


@pytest.mark.parametrize("extra, words", [([], "needs --fully-convolutional"),
                                          (["--fully-convolutional", "--opacity", "2"], "opacity"),
                                          (["--fully-convolutional", "-o", "/no/such/folder/x.png"], "does not exist")])
def test_errors_are_one_line(tmp_path, capsys, extra, words):
    source = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(source)
    argv = ["segment", str(source), *extra] + ([] if "-o" in extra else ["-o", str(tmp_path / "o.png")])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err
