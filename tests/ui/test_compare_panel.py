"""The Compare models panel: a fine-tuned copy (drift by layer) and a second architecture."""

from __future__ import annotations

import torch


def test_compare_a_fine_tuned_copy_then_another_architecture(window, qtbot, tmp_path):
    panel = window.compare
    window.docks["compare"].raise_()
    assert "Choose a second model" in panel.names.text()
    state = {k: v.clone() for k, v in window.session.model.module.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for key in ("features.18.0.weight", "classifier.1.weight"):
        state[key] += 0.3 * state[key].std() * torch.randn(state[key].shape, generator=generator)
    torch.save(state, tmp_path / "tuned.pth")
    from tests.ui.conftest import drop_files
    drop_files(panel.drift_plot.viewport(), [tmp_path / "tuned.pth"])   # dropped on the panel: it is B
    qtbot.waitUntil(lambda: panel.result is not None, timeout=60000)
    result = panel.result
    qtbot.wait(500)
    assert window.session.model.weights_path is None                  # not loaded as every panel's model
    assert result.same_architecture and panel.drift_plot.isVisible()
    moved = {d.name for d in result.drift if d.weights}
    assert moved == {"features.18.0", "classifier.1"}
    assert "Weights moved most: features.18.0" in panel.verdict.text() or \
        "Weights moved most: classifier.1" in panel.verdict.text()
    assert panel.table.item(0, 0).text() == window.predictions.predictions[0].label      # A's top-1
    assert panel.weight_curve.xData is not None and len(panel.weight_curve.xData) > 50
    plot = panel.drift_plot.getPlotItem()
    assert plot.legend is None and "weights" in plot.titleLabel.text          # the legend is not over the data
    assert "(x" not in panel.drift_plot.getAxis("left").labelString()          # no SI prefix lengthening it
    target = next(d for d in result.drift if d.name == "features.18.0")
    panel.select_depth(target.depth)                                     # click the plot: select everywhere
    assert window.session.selection.layer == "features.18.0"
    qtbot.waitUntil(lambda: all("features.18.0" in t.text() for t in panel.map_titles), timeout=30000)
    assert all(c.has_image() for c in panel.maps)
    assert window.feature_maps.tree.currentItem().data(0, 0x0100) == "features.18.0"

    assert not panel.b_layer.isVisible()                                 # one architecture: one layer

    broken = dict(state)                                                 # a negative BatchNorm variance
    broken["features.1.conv.0.1.running_var"] = -broken["features.1.conv.0.1.running_var"]
    torch.save(broken, tmp_path / "broken.pth")
    before = panel.result
    panel.load_other_weights(tmp_path / "broken.pth")
    qtbot.waitUntil(lambda: panel.result is not before, timeout=60000)
    assert panel.result.broken == (None, "NaN outputs") and panel.result.predictions[1] == ()
    assert "produces NaN outputs" in panel.verdict.text() and "Top-1 disagrees" not in panel.verdict.text()
    assert panel.table.item(0, 2).text() == "NaN outputs" and "nan" not in panel.table.item(0, 3).text()

    panel.load_other("timm:tf_efficientnet_lite0")                       # another network, real weights
    qtbot.waitUntil(lambda: panel.result is not None and not panel.result.same_architecture, timeout=60000)
    assert not panel.drift_plot.isVisible() and "different architecture" in panel.verdict.text()
    assert " layers have " in panel.verdict.text() or " 1 layer has " in panel.verdict.text()
    assert panel.b_layer.isVisible() and panel.b_layer.count() > 20      # B's own layers to pick from
    qtbot.waitUntil(lambda: panel.maps[1].has_image(), timeout=30000)   # a first guess at the same depth
    assert "features.18.0" not in panel.map_titles[1].text()
    picked = next(name for name in window.compare.other.layer_names if name.startswith("blocks.2"))
    panel.b_layer.setCurrentText(picked)
    panel.b_layer.activated.emit(panel.b_layer.currentIndex())          # as a user's pick does
    qtbot.waitUntil(lambda: f"{picked}:" in panel.map_titles[1].text(), timeout=30000)
    assert "features.18.0" in panel.map_titles[0].text() and panel.maps[1].has_image()
    assert window.session.model.name == "mobilenet_v2"                   # A, every panel's model, unchanged
