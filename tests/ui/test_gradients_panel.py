"""The gradients panel: methods, targets, displays."""


from __future__ import annotations

import numpy as np


def test_gradients_panel_methods_targets_and_displays(window, qtbot, tmp_path):
    panel = window.gradients
    window.docks["gradients"].raise_()
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].method == "saliency", timeout=30000)
    assert panel.results[0].target.class_index == window.predictions.predictions[0].index   # top-1
    assert panel.class_box.currentIndex() == panel.results[0].target.class_index
    shown = panel.canvas.image().copy()
    panel.display.setCurrentText("signed")                         # redraw only, no recomputation
    assert not np.array_equal(panel.canvas.image(), shown)
    panel.method.setCurrentText("grad-cam")
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].method == "grad-cam", timeout=30000)
    window.session.select(layer="features.6", channel=3, neuron=(5, 6))
    panel.target_kind.setCurrentText("selected neuron")
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].target.neuron == (5, 6), timeout=30000)
    assert panel.results[0].options["layer"] == "features.6"
    assert "features.6 channel 3" in panel.info.text()
    assert not panel.export_png(str(tmp_path / "missing" / "g.png"))       # said in the caption, not raised
    assert "Not exported" in panel.info.text()
    assert panel.export_png(str(tmp_path / "g.png")) and (tmp_path / "g.png").stat().st_size > 0


def test_cancelled_occlusion_leaves_no_stale_picture(window, qtbot):
    """After Cancel the panel says so and shows nothing: not the previous method's map under the new label."""
    panel = window.gradients
    window.docks["gradients"].raise_()
    qtbot.waitUntil(lambda: bool(panel.results), timeout=30000)
    assert panel.canvas.has_image()
    panel.stride.setValue(1)                                          # slow: thousands of patches
    panel.method.setCurrentText("occlusion")
    qtbot.waitUntil(lambda: "Computing occlusion" in panel.info.text(), timeout=10000)
    assert not panel.canvas.has_image() and panel.results == []
    window.jobs.cancel("gradients")
    assert "Cancelled: occlusion" in panel.info.text() and not panel.canvas.has_image()
    qtbot.wait(300)
    assert panel.results == [] and not panel.canvas.has_image()      # nothing arrives later
