"""The Experiments dock in the real window: its tabs are built when first shown, a run's result is
saved as PNG + JSON through the panel, and nothing is saved before a run."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from cnnviewer.ui.panels.experiments.panel import TABS
from cnnviewer.ui.panels.experiments.saving import PNG_TEXT_KEY


def test_tabs_build_when_shown_and_a_result_saves(window, qtbot, tmp_path):
    window.docks["experiments"].raise_()
    qtbot.waitUntil(lambda: window.panel_docks.built("experiments") is not None, timeout=5000)
    panel = window.experiments
    qtbot.waitUntil(lambda: 0 in panel._built, timeout=5000)      # the tab in front, once seen
    assert set(panel._built) == {0} and panel.tabs.count() == len(TABS)
    assert not panel.save(tmp_path / "early.png") and "run the experiment first" in panel.info.text()
    assert not (tmp_path / "early.png").exists()

    channels = panel.channels
    window.session.select(layer="features.16.conv.2")
    qtbot.mouseClick(channels.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: channels.result is not None, timeout=60000)
    assert panel.save(tmp_path / "channels.png"), panel.info.text()
    saved = json.loads((tmp_path / "channels.json").read_text())
    assert saved["experiment"] == "channels" and saved["model"] == "mobilenet_v2"
    assert len(saved["drops"]) == 160
    assert json.loads(QImage(str(tmp_path / "channels.png")).text(PNG_TEXT_KEY)) == saved
    window.close()


def test_the_dataset_panels_folder_reaches_the_experiments(window, qtbot, tmp_path):
    from PIL import Image
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "red.png")
    window.docks["experiments"].raise_()
    qtbot.waitUntil(lambda: window.panel_docks.built("experiments") is not None, timeout=5000)
    lesion = window.experiments.lesion
    assert lesion.folder is None
    window.dataset.open_folder(folder, start=False)
    assert lesion.folder == folder and window.controller.dataset_folder == folder
    window.close()
