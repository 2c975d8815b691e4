"""`--ablate LAYER:C1,C2[:zero|mean|scale=F]` on predict, compare, export and top (issue 24), with the
real ImageNet MobileNetV2 on the cat photo; bad specs are one line on stderr and exit 2. In-process
(`cli.main`), one torch thread, so the file takes seconds, not a process start per case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cnnviewer.cli import main
from tests.cli.conftest import run


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.jpg")
    Image.fromarray(data.coffee()).save(folder / "coffee.png")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    return folder


def run_json(capsys, *argv: str):
    return json.loads(run(capsys, *argv))


def test_predict_with_ablate_changes_the_probabilities(photos, capsys):
    cat = str(photos / "chelsea.jpg")
    intact = run_json(capsys, "predict", cat, "--json")
    assert intact[0]["label"] == "Egyptian cat" and intact[0]["trained"]
    knocked = run_json(capsys, "predict", cat, "--json", "--ablate", "features.17:0-159:scale=0.2",
                       "--ablate", "features.14.conv.0:3,7:mean")
    before = {p["index"]: p["probability"] for p in intact}
    after = {p["index"]: p["probability"] for p in knocked}
    assert abs(before[285] - after.get(285, 0.0)) > 0.05          # Egyptian cat moved by > 5 points
    again = run_json(capsys, "predict", cat, "--json")           # nothing left behind in the process
    assert again == intact
    assert main(["predict", cat, "--ablate", "classifier.1:285"]) == 0
    text = capsys.readouterr().out
    assert "with 1 knock-out" in text and "knocked out: classifier.1 ch 285: zero" in text
    assert "Egyptian cat" not in text.split("knocked out")[1].splitlines()[1]   # logit 0: not first any more


@pytest.mark.parametrize("spec, fragment", [
    ("features.99:1", "no layer 'features.99'"),
    ("features.3:24", "features.3 has 24 channels (0-23); channel 24 is out of range"),
    ("features.3:1:half", "mode 'half' is not zero, mean or scale=F"),
    ("features.3", "expected LAYER:C1,C2"),
    ("features.3:x", "'x' is not a channel number"),
])
def test_bad_spec_is_one_line_and_exit_2(photos, capsys, spec, fragment):
    assert main(["predict", str(photos / "chelsea.jpg"), "--ablate", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err


def test_compare_intact_against_knocked(photos, capsys):
    result = run_json(capsys, "compare", str(photos / "chelsea.jpg"), "--ablate", "features.16:0-159", "--json")
    assert result["models"] == ["mobilenet_v2", "mobilenet_v2 with 1 knock-out"]
    a, b = ({p["index"]: p["probability"] for p in side} for side in result["predictions"])
    assert abs(a[285] - b.get(285, 0.0)) > 0.01
    drift = {d["layer"]: d["activation"] for d in result["drift"]}
    assert drift["features.15.conv.0.0"] == 0 and drift["features.17.conv.0.0"] > 0   # only downstream moved


def test_export_predictions_with_ablate(photos, tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["export", "predictions", str(photos / "chelsea.jpg"), "-o", str(out),
                 "--ablate", "classifier.1:285"]) == 0, capsys.readouterr().err
    assert out.stat().st_size > 1000


def test_export_gradients_explains_the_knocked_out_model(photos, tmp_path, capsys):
    """Grad-CAM of the cat class with the last block's strongest channels zeroed is another map."""
    cat = str(photos / "chelsea.jpg")
    maps = {}
    for name, extra in (("intact", []), ("knocked", ["--ablate", "features.18:0-639"])):
        out = tmp_path / f"{name}.png"
        assert main(["export", "gradients", cat, "--method", "grad-cam", "--target-class", "285",
                     "--display", "heat", "-o", str(out), *extra]) == 0, capsys.readouterr().err
        maps[name] = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    assert np.abs(maps["intact"] - maps["knocked"]).mean() > 5


def test_top_with_ablate_indexes_apart(photos, tmp_path, capsys, monkeypatch):
    """The knocked-out logit is 0 in every image; the intact index is left as it was."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    common = [str(photos), "--class", "285", "--json", "--workers", "0", "-k", "3"]
    intact = run_json(capsys, "top", *common)
    assert max(hit["activation"] for hit in intact) > 5
    index_root = tmp_path / "cache" / "cnnviewer" / "index"
    before = {p: p.stat().st_mtime_ns for p in index_root.rglob("*") if p.is_file()}
    knocked = run_json(capsys, "top", *common, "--ablate", "classifier.1:285,1")
    assert [hit["activation"] for hit in knocked] == [0.0, 0.0, 0.0]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert np.isclose(run_json(capsys, "top", *common)[0]["activation"], intact[0]["activation"])
    assert main(["top", *common, "--ablate", "classifier.1:1:mean"]) == 2
    assert "needs an input image" in capsys.readouterr().err
