"""`cnnviewer ablate-rank IMAGE --layer L`: the table and JSON are the engine's numbers (real MobileNetV2 on
the cat), and bad input answers one line with exit status 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


pytestmark = pytest.mark.usefixtures("one_thread")


def engine_result(photo: Path, layer: str, target):
    from cnnviewer.engine.experiments.importance import channel_importance
    from cnnviewer.engine.media.images import load_image
    from cnnviewer.engine.models.loading import load_model
    from cnnviewer.engine.runtime.inference import prepare_input

    model = load_model("mobilenet_v2")
    x = prepare_input(load_image(photo), model.preprocess, model.device, model.dtype, 3).tensor
    return channel_importance(model, x, layer, target)


def test_table_and_json_file_are_the_engine_numbers(photo, tmp_path, capsys):
    from cnnviewer.cli import main
    from cnnviewer.engine.attribution.target import Target

    out = tmp_path / "rank.json"
    assert main(["ablate-rank", str(photo), "--layer", "features.16.conv.2", "--top", "4", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("mobilenet_v2: features.16.conv.2 (160 channels, zero knock-out), target class 285 "
                               "(Egyptian cat) = ")
    assert lines[1].split() == ["rank", "channel", "drop", "%", "of", "intact"] and len(lines) == 2 + 4
    found = json.loads(out.read_text())
    expected = engine_result(photo, "features.16.conv.2", Target(class_index=285))
    np.testing.assert_allclose(found["drops"], expected.drops, rtol=1e-6, atol=1e-6)
    assert found["order"][:4] == [int(c) for c in expected.order[:4]] and found["trained"]
    for rank, line in enumerate(lines[2:]):
        cells = line.split()
        channel, drop = int(cells[1]), float(cells[2])
        assert cells[0] == str(rank + 1) and channel == found["order"][rank]
        assert drop == pytest.approx(found["drops"][channel], abs=1e-4)
        assert float(cells[3]) == pytest.approx(100 * found["drops"][channel] / found["intact"], abs=0.06)


def test_channel_target_mean_mode_to_stdout(photo, capsys):
    from cnnviewer.cli import main
    from cnnviewer.engine.attribution.target import Target

    assert main(["ablate-rank", str(photo), "--layer", "features.15", "--target-layer", "features.16",
                 "--channel", "3", "--neuron", "2", "4", "--mode", "mean", "--json", "-"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["target"] == "features.16 channel 3 at (y=2, x=4)" and found["mode"] == "mean"
    assert len(found["drops"]) == found["channels"] == 160
    zero = engine_result(photo, "features.15", Target(layer="features.16", channel=3, neuron=(2, 4)))
    assert not np.allclose(found["drops"], zero.drops)      # mean differs from zero: the option reached the engine


@pytest.mark.parametrize("extra, message", [
    (["--layer", "features.99"], "mobilenet_v2 has no layer 'features.99'"),
    (["--layer", "features.16", "--target-layer", "features.14"], "is computed before features.16"),
    (["--layer", "features.14", "--channel", "2"], "--channel and --neuron need --target-layer"),
    (["--layer", "features.14", "--top", "0"], "argument --top: 0 is out of range"),
    (["--layer", "features.14", "--mode", "scale"], "argument --mode: invalid choice"),
])
def test_errors_are_one_line_with_status_2(photo, capsys, extra, message):
    from cnnviewer.cli import main

    assert main(["ablate-rank", str(photo), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cnnviewer ablate-rank: ") and message in err[0]
