"""An experiment's PNG + JSON: the numbers round-trip as strict JSON, the PNG carries them too, and a
failed write leaves the files that were there."""

from __future__ import annotations

import json

import numpy as np
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QLabel

from cnnviewer.ui.panels.experiments.saving import (
    PNG_TEXT_KEY,
    save_experiment,
    suggested_name,
)


def test_saved_png_and_json_hold_the_same_numbers(qtbot, tmp_path):
    picture = QLabel("lesion plot")
    picture.resize(200, 80)
    qtbot.addWidget(picture)
    payload = {"agreement": np.array([0.9, 0.5], dtype=np.float32), "undefined": float("nan"),
               "count": np.int64(3)}
    message = save_experiment(tmp_path / "lesion", picture, payload)   # no suffix: .png is added
    assert message.startswith("Saved"), message
    numbers = json.loads((tmp_path / "lesion.json").read_text())
    assert numbers == {"agreement": [0.8999999761581421, 0.5], "undefined": None, "count": 3}
    image = QImage(str(tmp_path / "lesion.png"))
    assert image.width() == picture.width() and json.loads(image.text(PNG_TEXT_KEY)) == numbers


def test_a_failed_picture_keeps_both_old_files(qtbot, tmp_path, monkeypatch):
    picture = QLabel("probe")
    qtbot.addWidget(picture)
    assert save_experiment(tmp_path / "probe.png", picture, {"run": 1}).startswith("Saved")
    before = (tmp_path / "probe.png").read_bytes()
    monkeypatch.setattr(QImage, "save", lambda *_args: False)     # the encoder fails mid-way
    message = save_experiment(tmp_path / "probe.png", picture, {"run": 2})
    assert message.startswith("Not saved")
    assert (tmp_path / "probe.png").read_bytes() == before
    assert json.loads((tmp_path / "probe.json").read_text()) == {"run": 1}   # the pair stays a pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.json", "probe.png"]   # no temporary left


def test_a_read_only_folder_is_one_line(qtbot, tmp_path):
    picture = QLabel("x")
    qtbot.addWidget(picture)
    message = save_experiment(tmp_path / "missing" / "x.png", picture, {})
    assert message.startswith("Not saved") and "\n" not in message


def test_suggested_names_are_safe_file_names():
    assert suggested_name("lesion", "mobilenet_v2") == "lesion-mobilenet_v2.png"
    assert suggested_name("probe", "net.py:My Net") == "probe-net.py_My_Net.png"
