"""Comparing two models on one image: predictions, shared layers, and per-layer drift."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from cnnviewer.engine.comparison.compare import compare
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models.handle import wrap_module
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks


@pytest.fixture(scope="module")
def mobilenet():
    return load_model("mobilenet_v2")


def copy_with(model, change=None):
    """The same architecture with its weights copied, then `change(state_dict)` applied."""
    import copy
    module = copy.deepcopy(model.module)
    if change is not None:
        state = module.state_dict()
        change(state)
        module.load_state_dict(state)
    return dataclasses.replace(wrap_module(module, model.name, base=model, trained=True), categories=model.categories)


def test_an_identical_copy_has_no_drift(mobilenet):
    result = compare(mobilenet, copy_with(mobilenet), sample_image("chelsea"))
    assert result.same_architecture and result.top1_agrees and result.disagreements() == ([], [])
    assert [p.label for p in result.predictions[0]] == [p.label for p in result.predictions[1]]
    assert result.drift and all(d.activation == 0.0 for d in result.drift)
    assert all(d.weights in (None, 0.0) for d in result.drift)


def test_drift_is_where_the_weights_changed(mobilenet):
    """Only the classifier changes: zero drift in every feature layer, the classifier's own change
    measured exactly (||dW|| / ||W||), and the other model left untouched."""
    def retrain_head(state):
        generator = torch.Generator().manual_seed(0)
        state["classifier.1.weight"] += 0.2 * state["classifier.1.weight"].std() * torch.randn(
            state["classifier.1.weight"].shape, generator=generator)
    tuned = copy_with(mobilenet, retrain_head)
    result = compare(mobilenet, tuned, sample_image("chelsea"))
    by_name = {d.name: d for d in result.drift}
    assert all(d.activation == 0.0 for d in result.drift if d.name.startswith("features"))
    assert [d.depth for d in result.drift] == list(range(len(result.drift)))   # leaf layers, in execution order
    assert result.drift[0].name == "features.0.0" and result.drift[-1].name == "classifier.1"
    assert by_name["classifier.1"].activation > 0.05
    a = torch.cat([p.flatten() for p in mobilenet.module.classifier[1].parameters()])
    b = torch.cat([p.flatten() for p in tuned.module.classifier[1].parameters()])
    assert by_name["classifier.1"].weights == pytest.approx(float((b - a).norm() / a.norm()), rel=1e-5)
    assert result.most_changed(1)[0].name == "classifier.1"
    assert not has_hooks(mobilenet.module) and not has_hooks(tuned.module)


def test_two_architectures_compare_predictions_and_shared_layers(mobilenet):
    lite0 = load_model("timm:tf_efficientnet_lite0")
    result = compare(mobilenet, lite0, sample_image("coffee"))
    assert not result.same_architecture and result.drift == ()
    assert result.top1_agrees and result.predictions[1][0].label == "espresso"
    assert len(result.predictions[0]) == len(result.predictions[1]) == 5


def test_compare_command_json(tmp_path):
    import subprocess
    import sys

    from PIL import Image
    from skimage import data

    photo = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    model = load_model("mobilenet_v2")
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    state["classifier.1.bias"] += 1.0
    torch.save(state, tmp_path / "tuned.pth")
    env = {"CNNVIEWER_OFFLINE": "1", "QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "cnnviewer", "compare", str(photo), "--model", "mobilenet_v2",
                           "--weights", str(tmp_path / "tuned.pth"), "--json"], capture_output=True, text=True,
                          timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["same_architecture"] and len(report["predictions"]) == 2
    changed = [d for d in report["drift"] if d["weights"]]
    assert [d["layer"] for d in changed] == ["classifier.1"]
    same = subprocess.run([sys.executable, "-m", "cnnviewer", "compare", str(photo), "--model", "mobilenet_v2"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert same.returncode == 2 and len(same.stderr.strip().splitlines()) == 1 and "same model" in same.stderr


def test_one_perturbed_block_shows_the_change_starting_at_that_block(mobilenet):
    def perturb(state):
        generator = torch.Generator().manual_seed(1)
        for key in [k for k in state if k.startswith("features.10.") and k.endswith("weight")]:
            state[key] += 0.1 * state[key].std() * torch.randn(state[key].shape, generator=generator)
    result = compare(mobilenet, copy_with(mobilenet, perturb), sample_image("chelsea"))
    names = [d.name for d in result.drift]
    start = next(i for i, name in enumerate(names) if name.startswith("features.10."))
    assert all(d.activation == 0.0 and d.weights in (None, 0.0) for d in result.drift[:start])   # untouched before
    assert result.drift[start].activation > 0 and result.drift[start].weights > 0          # the change starts here
    assert all(d.activation > 0 for d in result.drift[start:])                             # and carries on
    assert {d.name.rsplit(".", 1)[0].rsplit(".conv", 1)[0] for d in result.drift if d.weights} == {"features.10"}


def _negative_variance(state):
    """A BatchNorm running variance gone negative: sqrt of it is NaN, so is every output."""
    state["features.1.conv.0.1.running_var"] *= -1


def test_nan_outputs_are_flagged_not_ranked(mobilenet):
    result = compare(mobilenet, copy_with(mobilenet, _negative_variance), sample_image("chelsea"))
    assert result.broken == (None, "NaN outputs") and result.predictions[1] == ()
    assert len(result.predictions[0]) == 5 and not result.top1_agrees
    assert result.warnings() == ["model B (mobilenet_v2) produces NaN outputs: its top-5 is not a ranking"]


def test_compare_and_predict_commands_warn_of_nan_outputs(mobilenet, tmp_path, capsys, monkeypatch):
    """In-process: one warning line on stderr, no 'nan%' ranking on stdout; one layer in grammar."""
    from PIL import Image
    from skimage import data

    from cnnviewer.cli import main
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    photo = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    state = {k: v.clone() for k, v in mobilenet.module.state_dict().items()}
    _negative_variance(state)
    torch.save(state, tmp_path / "broken.pth")
    assert main(["compare", str(photo), "--model", "mobilenet_v2", "--weights", str(tmp_path / "broken.pth")]) == 0
    out, err = capsys.readouterr()
    assert err.count("cnnviewer: warning: model B") == 1 and "produces NaN outputs" in err
    assert "nan%" not in out and "top-1 not compared: B produces NaN outputs" in out
    assert main(["predict", str(photo), "--weights", str(tmp_path / "broken.pth"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "cnnviewer: warning:" in err and "NaN outputs" in err


def test_one_shared_layer_is_said_in_the_singular():
    from cnnviewer.cli.compare import _layers
    assert _layers(1) == "1 layer" and _layers(3) == "3 layers"
