"""Issue 25: a torchvision segmentation network in the real window (LR-ASPP MobileNetV3-Large, random
weights: none are offline; labelled untrained). Every panel renders it without an error."""

from __future__ import annotations

import logging

import pytest

from tests.ui.conftest import make_window

VOC = {"__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
       "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"}


def test_every_panel_renders_lraspp(qtbot, settings, caplog):
    caplog.set_level(logging.WARNING)
    window = make_window(qtbot, settings)
    try:
        window.controller.open_sample("chelsea")
        window.controller.load_model("lraspp_mobilenet_v3_large")
        qtbot.waitUntil(lambda: window.session.model is not None
                        and window.session.model.name == "lraspp_mobilenet_v3_large"
                        and bool(window.predictions.predictions), timeout=60000)
        assert "untrained" in window.model_label.text()
        assert {p.label for p in window.predictions.predictions} <= VOC       # 21 VOC classes, averaged over the map
        for layer, shape in (("classifier.low_classifier", (21, 65, 65)), ("upsample", (21, 520, 520))):
            window.session.select(layer=layer, channel=None)
            qtbot.waitUntil(lambda layer=layer: window.feature_maps.view is not None
                            and window.feature_maps.view.layer == layer, timeout=30000)
            assert window.feature_maps.view.values.shape == shape
        window.session.select(layer="backbone.4.block.0.0", channel=None)   # a conv with filters to draw
        window.docks["filters"].raise_()
        qtbot.waitUntil(lambda: window.filters.view is not None and window.filters.view.layer == "backbone.0.0"
                        and window.filters.selected_view is not None
                        and window.filters.selected_view.layer == "backbone.4.block.0.0", timeout=30000)
        for key, ready in (("model_summary", lambda: window.model_summary.summary is not None
                            and window.model_summary.summary.model == "lraspp_mobilenet_v3_large"),
                           ("architecture", lambda: window.architecture.graph is not None
                            and window.architecture.graph.method == "torch.fx"),
                           ("receptive_field", lambda: window.receptive_field.result is not None)):
            window.docks[key].raise_()
            qtbot.waitUntil(ready, timeout=60000)
        summary = window.model_summary.summary
        assert summary.row("upsample").output_shape == (21, 520, 520)
        assert sum(r.params + r.bias_params for r in summary.rows) == sum(
            p.numel() for p in window.session.model.module.parameters())
        shapes = [n.output_shape for n in window.architecture.graph.nodes if n.label == "interpolate"]
        assert shapes == [(128, 65, 65), (21, 520, 520)]
        field = window.receptive_field.result
        assert field.layer == "backbone.4.block.0.0" and field.effective_extent is not None
        window.session.select(layer="upsample", channel=None)    # a pixel of the full-size class map
        qtbot.waitUntil(lambda: window.receptive_field.result.layer == "upsample", timeout=60000)
        field = window.receptive_field.result
        # 1/16 of 520 is 32.5: the head's 33 positions are stretched onto 65, so the jump is 66/65, not 1
        assert field.field.jump == pytest.approx((66 / 65, 66 / 65)) and field.layer_shape == (21, 520, 520)
        window.docks["gradients"].raise_()         # last: its scores keep the job thread busy for a while
        qtbot.waitUntil(lambda: bool(window.gradients.results), timeout=60000)
        assert window.gradients.results[0].attribution.shape[-2:] == (520, 520)
        said = window.messages.text().lower()
        assert not any(word in said for word in ("error", "failed", "traceback", "cannot")), said
        assert not [r for r in caplog.records if r.name.startswith("cnnviewer")], caplog.text
    finally:
        window.jobs.runner.close()


def test_the_model_chooser_shows_the_segmentation_family(qtbot):
    from cnnviewer.engine.segmentation.family import FAMILY, FAMILY_NOTE
    from cnnviewer.ui.dialogs import ChooseModelDialog

    catalogue = {"MobileNet": [("mobilenet_v2", "offline weights pack")],
                 FAMILY: [("fcn_resnet50", "untrained (offline)"), ("lraspp_mobilenet_v3_large", "torch hub cache")]}
    dialog = ChooseModelDialog(catalogue, "fcn_resnet50")
    qtbot.addWidget(dialog)
    assert dialog.chosen() == "fcn_resnet50"
    family = dialog.tree.currentItem().parent()
    assert family.text(0) == FAMILY and family.text(1) == f"{FAMILY_NOTE} · 1 with weights here"
    assert "Pascal VOC" in family.toolTip(0) and "class map" in dialog.tree.currentItem().toolTip(0)
    mobilenet = dialog.tree.topLevelItem(0)
    assert mobilenet.text(1) == "1 with weights here" and mobilenet.toolTip(0) == ""
    dialog.search.setText("lraspp")
    assert dialog.chosen() == "lraspp_mobilenet_v3_large"
