"""Issue 25: the Live panel's segmentation task, offscreen in the real window, on a video file.

LR-ASPP with random weights (none offline: labelled untrained) and the fully convolutional
MobileNetV2 with its real weights; the overlay, legend, opacity, pause / step, a click, a capture,
and back to detection.
"""

from __future__ import annotations

import json

import numpy as np


def test_segmentation_task_on_a_video(window, qtbot, astronaut_clip, tmp_path):
    panel = window.live_detection
    window.docks["live_detection"].raise_()
    assert not panel.segmentation.isVisibleTo(panel) and panel.thresholds.isVisibleTo(panel)
    panel.task.setCurrentText("Segmentation")
    assert panel.segmentation.isVisibleTo(panel) and panel.segmentation.model.isVisibleTo(panel)
    assert not panel.detector.isVisibleTo(panel) and not panel.thresholds.isVisibleTo(panel)
    assert not panel.view_row.isVisibleTo(panel) and panel.model_label.text() == "Model"
    panel.segmentation.model.setCurrentText("lraspp_mobilenet_v3_large")
    panel.playback.loop.setChecked(True)
    assert panel.open_file(astronaut_clip.video, realtime=False)
    qtbot.waitUntil(lambda: panel.result is not None and panel.result.segmentation is not None
                    and panel.result.detector.name == "lraspp_mobilenet_v3_large", timeout=60000)
    panel.toggle_pause()
    qtbot.wait(300)
    class_map, pixels = panel.result.segmentation, panel.frame.pixels
    assert class_map.labels.shape == pixels.shape[:2] == (480, 640)
    shown = panel.canvas.image()
    assert shown.shape == pixels.shape and not np.array_equal(shown, pixels)   # the overlay is drawn
    expected = np.abs(shown.astype(int) - (pixels.astype(int) + class_map.colour) / 2)
    assert expected.max() <= 1                                                 # at the default 0.5
    legend = panel.segmentation.legend.text()
    assert panel.segmentation.legend.isVisibleTo(panel) and class_map.legend[0].name in legend
    status = panel.status.text()
    assert "untrained" in status and "frames/s" in status and "latency" in status and "model" in status
    panel.segmentation.opacity.setValue(0.0)                                   # the raw frame
    assert np.array_equal(panel.canvas.image(), pixels)
    panel.segmentation.opacity.setValue(0.7)
    panel.canvas.clicked.emit(100.0, 200.0)                                     # which class is there
    name = class_map.categories[class_map.labels[100, 200]]
    assert f"Pixel (200, 100): {name}" in panel.message.text()

    shown_index = panel.frame.index
    panel.step()                                                               # one frame while paused
    qtbot.waitUntil(lambda: panel.frame.index != shown_index, timeout=30000)
    assert panel.result.segmentation is not None and panel.paused

    saved = panel.capture(tmp_path)                                            # PNG + per-class JSON
    table = json.loads(saved.with_suffix(".json").read_text())
    assert saved.exists() and sum(row["pixels"] for row in table["classes"]) == 480 * 640
    assert window.session.image.name == saved.name

    panel.segmentation.model.setCurrentText("mobilenet_v2 (fully convolutional)")   # runs on the paused frame
    qtbot.waitUntil(lambda: panel.result.detector.name == "mobilenet_v2 (fully convolutional)", timeout=60000)
    assert panel.result.segmentation.map_size == (11, 14) and "untrained" not in panel.status.text()
    assert panel.result.segmentation.legend[0].name in panel.segmentation.legend.text()

    panel.task.setCurrentText("Detection")                                     # back: MTCNN on that frame
    assert panel.thresholds.isVisibleTo(panel) and not panel.segmentation.legend.isVisibleTo(panel)
    qtbot.waitUntil(lambda: panel.result.segmentation is None and panel.result.detector.name == "mtcnn",
                    timeout=60000)
    assert len(panel.shown) >= 1 and all(d.label == "face" for d in panel.shown)
    assert "shown of" in panel.status.text()


def test_a_click_on_a_class_beyond_the_names_says_class_n():
    """A model with more outputs than names: the click used to raise IndexError."""
    from types import SimpleNamespace

    from cnnviewer.engine.segmentation.live_scene import make_class_map
    from cnnviewer.ui.panels.live_segmentation import clicked

    class_map = make_class_map(np.array([[0, 5]]), np.array([[0.5, 0.75]]), ("background",),
                               np.zeros((6, 3), np.uint8), (1, 2), (1, 2))
    said: list[str] = []
    clicked(SimpleNamespace(result=SimpleNamespace(segmentation=class_map), note=said.append), 0.0, 1.0)
    assert said == ["Pixel (1, 0): class 5, probability 0.75."]
