"""The hostile-input matrix for `synthesize` (flags and `--from`) and `compare`, from the rows of
shared/reports/hostile-inputs-2026-12.md (#3, #9-#12, #17-#19, #28): every case ends in one line
on stderr and exit 2, with no traceback, nothing written and the earlier output intact.

Run in-process (`cnnviewer.cli.main`) so the matrix costs milliseconds a case: the recipe cases are
refused before the model loads. A process-killing case (torch_threads 100000 was SIGSEGV) is refused
before torch sees it, so it cannot take the test run down."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from skimage import data

from cnnviewer.cli import main

EARLIER = b"an earlier output the failed run must leave alone"


@pytest.fixture(scope="module")
def base_recipe(tmp_path_factory) -> dict:
    """A real recipe, written by a real (short) run."""
    folder = tmp_path_factory.mktemp("recipe")
    out = folder / "base.png"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNVIEWER_OFFLINE", "1")
        assert main(["synthesize", "--method", "ascent", "--target-class", "1", "--steps", "2", "--size", "32",
                     "-o", str(out)]) == 0
    return json.loads(out.with_suffix(".json").read_text())


def _set(path: str, value):
    """A change to the recipe: `path` is dotted ("settings.steps"); DELETE removes the key."""
    def change(recipe):
        keys = path.split(".")
        holder = recipe
        for key in keys[:-1]:
            holder = holder[key]
        if value is DELETE:
            del holder[keys[-1]]
        else:
            holder[keys[-1]] = value
        return recipe
    return change


DELETE = object()
LAYER_TARGET = {"class_index": None, "layer": "features.3", "channel": 0, "neuron": None}

RECIPES = {   # report row: the change
    "not_object (17)": lambda r: [1, 2],
    "null (17)": lambda r: None,
    "missing_method (17)": _set("method", DELETE),
    "method_bogus": _set("method", "telepathy"),
    "missing_target (17)": _set("target", DELETE),
    "target_list (17)": _set("target", [1, 2]),
    "target_both": _set("target", dict(LAYER_TARGET, class_index=3)),
    "model_int (17)": _set("model", 5),
    "weights_list": _set("weights", ["a.pth"]),
    "neuron_bad (17)": _set("target", dict(LAYER_TARGET, neuron="ab")),
    "channel_neg (19)": _set("target", dict(LAYER_TARGET, channel=-3)),
    "class_neg (19)": _set("target.class_index", -1),
    "class_bool": _set("target.class_index", True),
    "steps_str (17)": _set("settings.steps", "10"),
    "steps_neg (19)": _set("settings.steps", -5),
    "steps_zero (19)": _set("settings.steps", 0),
    "steps_huge (18)": _set("settings.steps", 10**9),
    "size_float (17)": _set("settings.size", 64.5),
    "size_neg (17)": _set("settings.size", -64),
    "size_one (17)": _set("settings.size", 1),
    "size_huge (17)": _set("settings.size", 100000),
    "lr_nan (19)": _set("settings.lr", math.nan),
    "lr_inf": _set("settings.lr", math.inf),
    "lr_negative": _set("settings.lr", -1.0),
    "lr_policy_bogus": _set("settings.lr_policy", "fastest"),
    "settings_list (18)": _set("settings", [1, 2]),
    "threads_huge (3)": _set("torch_threads", 100000),
    "threads_neg (3)": _set("torch_threads", -1),
    "threads_str (3)": _set("torch_threads", "x"),
    "seed_huge (12)": _set("seed", 10**23),
    "settings_seed_neg": _set("settings.seed", -1),
    "facets_nofolder (17)": lambda r: dict(_set("method", "facets")(r), folder=None),
    "style_missing (17)": lambda r: dict(r, method="style", image="content.png", style_image=None),
    "dream_noimage (17)": lambda r: dict(r, method="deepdream", image=None),
    "image_int": lambda r: dict(r, method="deepdream", image=7),
}


@pytest.mark.parametrize("change", RECIPES.values(), ids=RECIPES.keys())
def test_a_bad_recipe_is_refused_in_one_line(base_recipe, change, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(change(copy.deepcopy(base_recipe))))     # NaN is written as JSON's NaN
    _refused(["synthesize", "--from", str(recipe), "-o", str(tmp_path / "out.png")], tmp_path, capsys)


def test_a_recipe_nested_too_deep_for_the_parser_is_refused(tmp_path, capsys):
    recipe = tmp_path / "r.json"
    recipe.write_text("[" * 200000 + "]" * 200000)
    _refused(["synthesize", "--from", str(recipe), "-o", str(tmp_path / "out.png")], tmp_path, capsys)


MODEL_BOUNDS = {   # report rows 9-11 (flags) and 17 (the same in a recipe): the model's own bounds
    "target_class_5000 (9)": ["--target-class", "5000"],
    "channel_99999 (10)": ["--layer", "features.3", "--channel", "99999"],
    "neuron_999 (11)": ["--layer", "features.3", "--channel", "0", "--neuron", "999", "999"],
    "seed_10e23 (12)": ["--target-class", "1", "--seed", str(10**23)],
    "layer_missing": ["--layer", "nope.9", "--channel", "0"],
}


@pytest.mark.parametrize("flags", MODEL_BOUNDS.values(), ids=MODEL_BOUNDS.keys())
def test_flags_outside_the_model_are_refused_in_one_line(flags, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    _refused(["synthesize", *flags, "--steps", "2", "--size", "64", "-o", str(tmp_path / "out.png")], tmp_path,
             capsys)


@pytest.mark.parametrize("target", [{"class_index": 5000}, {"layer": "features.3", "channel": 99999},
                                    {"layer": "features.3", "channel": 0, "neuron": [999, 999]}],
                         ids=["class_5000 (17)", "channel_oob (17)", "neuron_oob (17)"])
def test_a_recipe_unit_outside_the_model_is_refused(base_recipe, target, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(dict(base_recipe, target=dict(LAYER_TARGET, class_index=None, **target)
                                      if "layer" in target else {"class_index": 5000})))
    _refused(["synthesize", "--from", str(recipe), "-o", str(tmp_path / "out.png")], tmp_path, capsys)


def test_a_full_disk_leaves_the_earlier_image_and_no_partial_file(tmp_path, capsys, monkeypatch):
    """Row 28: the PNG encoder runs out of space half-way."""
    from PIL import Image

    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    original = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        original(self, fp, *args, **kwargs)
        Path(fp).write_bytes(Path(fp).read_bytes()[:100])      # as far as the disk had room
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    _refused(["synthesize", "--target-class", "1", "--steps", "1", "--size", "32", "-o", str(tmp_path / "out.png")],
             tmp_path, capsys)


def test_compare_warnings_are_one_line_each(tmp_path, capsys, monkeypatch):
    """Compare's engine warnings (a traced copy that disagrees, NaN weights) carry the CLI's prefix."""
    import logging

    from cnnviewer.cli.common import one_line_warnings
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    one_line_warnings()
    logging.getLogger("cnnviewer.engine.runtime.recording").warning("traced copy of %s computes something else; "
                                                                    "using hooks", "MobileNetV2")
    assert capsys.readouterr().err == ("cnnviewer: warning: traced copy of MobileNetV2 computes something else; "
                                       "using hooks\n")


def test_compare_of_two_nan_weight_files_warns_of_the_traced_copy_once(tmp_path, capsys, monkeypatch):
    """Two weight files of one architecture whose outputs are NaN (a BN running_var negated): both
    traced copies 'disagreed' with their model (NaN != NaN), and the line was printed once per side.
    A copy that gives NaN where its model does is faithful: no such line now, the NaN said once per side."""
    import torch

    from cnnviewer.engine.models.loading import load_model
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    photo = tmp_path / "coffee.png"
    from PIL import Image
    Image.fromarray(data.coffee()).save(photo)
    state = load_model("mobilenet_v2").module.state_dict()
    state["features.5.conv.1.1.running_var"] = -state["features.5.conv.1.1.running_var"]
    for name in ("a.pth", "b.pth"):
        torch.save(state, tmp_path / name)
    argv = ["compare", str(photo), "--model", "mobilenet_v2", "--weights", str(tmp_path / "a.pth"),
            "--weights", str(tmp_path / "b.pth")]
    for _run in range(2):
        capsys.readouterr()
        assert main(argv) == 0
        error = capsys.readouterr().err
        assert "traced copy" not in error, error
        assert error.count("model A (mobilenet_v2) produces NaN") == 1 and error.count("model B (mobilenet_v2) produces NaN") == 1


def test_compare_refuses_the_same_side_twice_and_an_untrusted_pickle(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    photo = tmp_path / "cat.png"
    from PIL import Image
    Image.fromarray(data.chelsea()).save(photo)
    _refused(["compare", str(photo), "--model", "mobilenet_v2", "--model", "mobilenet_v2"], tmp_path, capsys)
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Payload()}, tmp_path / "evil.pth")
    _refused(["compare", str(photo), "--weights", str(tmp_path / "evil.pth")], tmp_path, capsys)
    assert not marker.exists()


def _refused(argv: list[str], folder: Path, capsys) -> None:
    """One line, exit 2, no traceback; an earlier output and everything else in the folder untouched."""
    out = folder / "out.png"
    out.write_bytes(EARLIER)
    before = sorted(p.name for p in folder.iterdir())
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: ") and "Traceback" not in error, error
    assert out.read_bytes() == EARLIER
    assert sorted(p.name for p in folder.iterdir()) == before     # no partial or temporary file left
