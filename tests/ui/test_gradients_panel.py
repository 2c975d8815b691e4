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


def test_method_settings_are_choosable_and_captions_name_the_class(window, qtbot):
    panel = window.gradients
    window.docks["gradients"].raise_()
    qtbot.waitUntil(lambda: bool(panel.results), timeout=30000)
    top = window.predictions.predictions[0]
    assert f"class {top.index} ({top.label})" in panel.info.text()           # the class by name
    assert not panel._option_boxes["occlusion"].isVisibleTo(panel)          # saliency has no settings
    panel.method.setCurrentText("integrated-gradients")
    assert panel._option_boxes["integrated-gradients"].isVisibleTo(panel)
    panel.steps.setValue(8)
    panel.baseline.setCurrentText("blurred")
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].options.get("steps") == 8
                    and panel.results[0].options.get("baseline") == "blurred", timeout=30000)
    panel.method.setCurrentText("grad-cam")
    index = panel.cam_layer.findData("features.10")
    assert index > 0 and panel.cam_layer.count() > 15                      # every layer with maps
    panel.cam_layer.setCurrentIndex(index)
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].options.get("layer") == "features.10",
                    timeout=30000)
    panel.method.setCurrentText("occlusion")
    panel.patch.setValue(56)
    panel.stride.setValue(56)
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].options.get("patch") == 56, timeout=30000)
    assert panel.results[0].options["stride"] == 56
    panel.method.setCurrentText("deconvnet")
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].method == "deconvnet", timeout=30000)
    assert "no max pooling" in panel.info.text()                           # MobileNetV2 has none
    assert all(widget.toolTip() for widget in (panel.method, panel.target_kind, panel.display, panel.opacity,
                                               panel.fill, panel.patch, panel.stride, panel.steps,
                                               panel.baseline, panel.cam_layer))


def test_grad_cam_names_the_layer_it_used(window, qtbot):
    """The automatic layer is the last map before global pooling, named in the caption and in the
    layer box; EfficientNet-B0 (random initialisation offline: the choice depends on the wiring
    only) used to get an early 112x112 layer because of its squeeze-and-excitation gates."""
    panel = window.gradients
    window.docks["gradients"].raise_()
    qtbot.waitUntil(lambda: bool(panel.results), timeout=30000)
    panel.method.setCurrentText("grad-cam")
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].method == "grad-cam", timeout=30000)
    assert "grad-cam at layer features.18.2 (auto)" in panel.info.text()
    assert panel.cam_layer.itemText(0) == "auto: features.18.2" and panel.cam_layer.currentData() is None
    window.controller.load_model("efficientnet_b0")
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].options.get("layer") == "features.8.2",
                    timeout=60000)
    assert "grad-cam at layer features.8.2 (auto)" in panel.info.text()
    assert panel.cam_layer.itemText(0) == "auto: features.8.2"
    panel.cam_layer.setCurrentIndex(panel.cam_layer.findData("features.6"))
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].options.get("layer") == "features.6",
                    timeout=30000)
    assert "grad-cam at layer features.6 " in panel.info.text() and "(auto)" not in panel.info.text()
