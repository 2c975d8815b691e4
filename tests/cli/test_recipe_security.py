"""A recipe is a file people share: replaying one never runs code the user did not name
(hostile-input report #1). The architecture file a recipe names is imported only when the user names
the same file with --model; --trust covers only a weights file named on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnviewer.cli import main

ARCH = """\
import os
import torch.nn as nn
open(os.path.join(os.path.dirname(__file__), "PWNED"), "a").write("ran\\n")   # top-level code: a marker

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))
"""


@pytest.fixture()
def shared_recipe(tmp_path: Path) -> tuple[Path, Path]:
    """A recipe, as received from someone else, that names an architecture file beside it."""
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "arch.py").write_text(ARCH)
    recipe = {"method": "ascent", "target": {"class_index": 1, "layer": None, "channel": None, "neuron": None},
              "seed": 0, "model": str(folder / "arch.py") + ":Net", "weights": None,
              "settings": {"steps": 2, "size": 32, "seed": 0}}
    path = folder / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path, folder / "PWNED"


def test_a_recipe_naming_an_architecture_file_imports_nothing(shared_recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    recipe, marker = shared_recipe
    assert main(["synthesize", "--from", str(recipe), "-o", str(tmp_path / "x.png")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "arch.py" in error and "--model" in error
    assert not marker.exists() and not (tmp_path / "x.png").exists()


def test_naming_the_same_file_on_the_command_line_runs_it(shared_recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    recipe, marker = shared_recipe
    spec = json.loads(recipe.read_text())["model"]
    assert main(["synthesize", "--from", str(recipe), "--model", spec, "-o", str(tmp_path / "x.png")]) == 0
    assert marker.read_text() == "ran\n" and (tmp_path / "x.png").is_file()


def test_trust_covers_only_weights_named_on_the_command_line(tmp_path, capsys, monkeypatch):
    """--trust with a recipe whose weights are a pickled model: refused, the pickle never runs."""
    import torch

    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    marker = tmp_path / "PWNED_pickle"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Payload()}, tmp_path / "evil.pth")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"method": "ascent", "seed": 0, "model": "mobilenet_v2",
                                  "weights": str(tmp_path / "evil.pth"),
                                  "target": {"class_index": 1, "layer": None, "channel": None, "neuron": None},
                                  "settings": {"steps": 1, "size": 32, "seed": 0}}))
    assert main(["synthesize", "--from", str(recipe), "--trust", "-o", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not marker.exists()
