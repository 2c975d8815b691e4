"""Issue 23 in the window: the new methods and their scores in Gradients, the Faithfulness panel's
curves (the perturbed image under the mouse) and its sanity check, on the real MobileNetV2."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt


def test_new_methods_have_their_settings_and_every_map_gets_its_scores(window, qtbot):
    panel = window.gradients
    window.docks["gradients"].raise_()
    qtbot.waitUntil(lambda: bool(panel.results) and bool(panel.scores), timeout=60000)
    assert "deletion AUC" in panel.info.text() and "lower is better" in panel.info.text()
    panel.method.setCurrentText("smoothgrad")
    assert panel._option_boxes["smoothgrad"].isVisibleTo(panel)
    assert not panel._option_boxes["integrated-gradients"].isVisibleTo(panel)
    panel.smooth_base.setCurrentText("integrated-gradients")          # IG's steps are SmoothGrad's too then
    assert panel._option_boxes["integrated-gradients"].isVisibleTo(panel)
    panel.smooth_base.setCurrentText("input-x-gradient")
    panel.samples.setValue(4)
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].method == "smoothgrad"
                    and panel.results[0].options.get("samples") == 4, timeout=60000)
    assert panel.results[0].options["base"] == "input-x-gradient"
    for method in ("grad-cam++", "layer-cam"):
        panel.method.setCurrentText(method)
        assert panel._option_boxes[method].isVisibleTo(panel)           # the CAM layer box
        qtbot.waitUntil(lambda method=method: bool(panel.results) and panel.results[0].method == method
                        and bool(panel.scores), timeout=60000)
        assert f"{method} at layer features.18.2 (auto)" in panel.info.text()
    assert panel.scores[method].scores["deletion"] < panel.scores[method].scores["insertion"]   # a real cat
    panel.scores_box.setChecked(False)
    assert not panel.scores and "deletion AUC" not in panel.info.text()


def test_curves_of_the_chosen_methods_and_the_image_under_the_mouse(window, qtbot):
    panel = window.faithfulness
    window.docks["faithfulness"].raise_()
    curves = panel.curves
    curves.methods.set_chosen(("saliency", "grad-cam"))
    curves.steps.setValue(20)
    qtbot.waitUntil(lambda: set(curves.results) == {"saliency", "grad-cam"}, timeout=90000)
    top = window.predictions.predictions[0]
    assert panel.target_label.text() == f"class {top.index} ({top.label})"
    qtbot.waitUntil(lambda: len(curves.plot.getPlotItem().listDataItems()) == 2, timeout=5000)
    lines = curves.plot.getPlotItem().listDataItems()
    assert len(lines) == 2 and len(lines[0].xData) == 21                   # steps + the unperturbed image
    assert curves.table.rowCount() == 2 and curves.table.horizontalHeaderItem(1).text() == "Deletion AUC"
    assert "lower is better" in curves.table.horizontalHeaderItem(1).toolTip().lower()
    curves.picked.setCurrentText("grad-cam")
    view = curves.plot.getPlotItem().vb
    for fraction in (0.0, 0.5):                 # the mouse over the plot: the image at that step
        point = view.mapViewToScene(QPointF(fraction, 0.5))
        curves._on_mouse_moved(point)
        qtbot.waitUntil(lambda fraction=fraction: f"{fraction:.0%} of the pixels removed"
                        in curves.frame_label.text(), timeout=5000)
    half = curves.frame.image()
    assert not np.array_equal(half, window.faithfulness.curves.results["grad-cam"].display)
    curves.curve.setCurrentIndex(1)             # insertion
    assert "inserted" in curves.plot.getPlotItem().getAxis("bottom").labelText
    curves.table.sortItems(1, Qt.SortOrder.AscendingOrder)
    low = curves.table.item(0, 1).text()
    assert float(low) == min(r.scores["deletion"] for r in curves.results.values()).__round__(3)


def test_sanity_check_flags_guided_backprop_on_the_real_mobilenet(window, qtbot):
    panel = window.faithfulness
    window.docks["faithfulness"].raise_()
    panel.tabs.setCurrentWidget(panel.sanity)
    panel.sanity.methods.set_chosen(("guided-backprop", "grad-cam"))
    parameters = [p.detach().clone() for p in window.session.model.module.parameters()]
    panel.run_sanity()
    qtbot.waitUntil(lambda: panel.sanity.result is not None, timeout=180000)
    result = panel.sanity.result
    assert result.failing["guided-backprop"] and not result.failing["grad-cam"]
    assert "✗" in panel.sanity.verdicts.text() and panel.sanity.canvas.has_image()
    assert "guided-backprop" in panel.info.text()
    assert all(torch_equal(a, b) for a, b in zip(parameters, window.session.model.module.parameters()))


def torch_equal(a, b) -> bool:
    return bool((a == b.detach()).all())
