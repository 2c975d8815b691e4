"""`--model FILE.onnx` on the subcommands (predict, summary, export, compare), with MobileNetV2's real
weights exported by torch.onnx in the test; a bad ONNX file is one line on stderr and exit 2.
In-process (`cli.main`), one torch thread."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

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


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    from cnnviewer.engine.models.loading import load_model

    folder = tmp_path_factory.mktemp("onnx_cli")
    Image.fromarray(data.chelsea()).save(folder / "cat.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(load_model("mobilenet_v2").module, (torch.zeros(1, 3, 224, 224),),
                          str(folder / "net.onnx"), dynamo=False)
    whole = (folder / "net.onnx").read_bytes()
    (folder / "cut.onnx").write_bytes(whole[: len(whole) // 3])
    return folder


def run(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def refused(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and not captured.out and "Traceback" not in captured.err
    return lines[0]


def test_predict_with_an_onnx_model_gives_the_torch_models_top5(files, capsys):
    image = str(files / "cat.jpg")
    ours = json.loads(run(capsys, "predict", image, "--model", str(files / "net.onnx"), "--json"))
    theirs = json.loads(run(capsys, "predict", image, "--model", "mobilenet_v2", "--json"))
    assert json.dumps(ours).count("Egyptian cat") == 1
    assert [p["index"] for p in ours] == [p["index"] for p in theirs]
    assert "net.onnx" in run(capsys, "predict", image, "--weights", str(files / "net.onnx"))


def test_summary_export_and_compare_take_the_onnx_file(files, capsys):
    onnx_file = str(files / "net.onnx")
    summary = run(capsys, "summary", "--model", onnx_file)
    assert "features.3.conv.0.2" in summary and "ReLU6" in summary
    out = files / "maps.png"
    run(capsys, "export", "feature-maps", str(files / "cat.jpg"), "--model", onnx_file,
        "--layer", "features.3.conv.0.2", "-o", str(out))
    assert Image.open(out).size[0] > 100
    compared = json.loads(run(capsys, "compare", str(files / "cat.jpg"), "--model", "mobilenet_v2",
                              "--model", onnx_file, "--json"))
    assert compared["models"] == ["mobilenet_v2", "net.onnx"] and compared["top1_agrees"]
    assert len(compared["shared_layers"]) == 159 and "features.18.2" in compared["shared_layers"]   # by name


def test_bad_onnx_files_exit_2_with_one_line(files, capsys):
    image = str(files / "cat.jpg")
    line = refused(capsys, "predict", image, "--model", str(files / "cut.onnx"))
    assert "cut.onnx is not an ONNX model, or is truncated" in line
    line = refused(capsys, "predict", image, "--model", "mobilenet_v2", "--weights", str(files / "net.onnx"))
    assert "whole model (ONNX)" in line and "--model" in line
    assert "no such file" in refused(capsys, "--model", str(files / "missing.onnx"))   # the window's check


def test_indexing_with_a_graph_fixed_at_one_image_is_one_line_naming_the_batch_size(tmp_path, capsys):
    """A graph that spells its batch of 1 out cannot run the indexer's batches: one line, not a traceback."""
    from tests.engine.test_onnx_models import classifier

    images = tmp_path / "images"
    images.mkdir()
    for name, photo in (("cat.png", data.chelsea()), ("coffee.png", data.coffee())):
        Image.fromarray(photo).save(images / name)
    spelled = classifier(tmp_path, "spelled.onnx", classes=3, spelled_batch=True)
    line = refused(capsys, "index", str(images), "--model", spelled, "-o", str(tmp_path / "index"))
    assert "cannot run a batch of 2 images" in line and "batch size of 1" in line
    assert main(["index", str(images), "--model", spelled, "--batch-size", "1", "-o", str(tmp_path / "one")]) == 0
