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
from tests.cli.conftest import refused, run


pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_hostile_onnx_files_are_one_line_and_odd_node_names_still_load(tmp_path, capsys):
    """A NUL byte in an external-data location and a 226-byte graph asking for 40 GB: one line, exit 2;
    nodes named like onnx2torch's constant buffers: the summary lists them under another name."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from tests.engine.test_onnx_models import bomb, conv_weight, external, save

    conv = [helper.make_node("Conv", ["x", "w"], ["y"])]
    nul = save(tmp_path, "nul.onnx", conv, [external("w\0.bin")], outputs=[
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])])
    assert "nul.onnx: tensor 'w' points outside the model's folder" in refused(capsys, "summary", "--model", nul)
    line = refused(capsys, "summary", "--model", bomb(tmp_path, "bomb.onnx", [1, 1, 100_000, 100_000]))
    assert line.startswith("error: bomb.onnx: tensor 'big' would hold 1e+10 values")
    odd = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
           helper.make_node("Reshape", ["c", "shape"], ["y"], name="onnx_initializer_0")]
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    path = save(tmp_path, "odd.onnx", odd, [conv_weight(), shape], out_shape=(1, 144))
    assert "onnx_initializer_0_ " in run(capsys, "summary", "--model", path)
