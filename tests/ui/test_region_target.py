"""Issue 25 in the real window: a region of a class map as every view's target. The real MobileNetV2 made
fully convolutional (224-px square, a 7×7 class map); `session.select(class_index=c, region=box)` (what
the Input panel's click, drag or legend does) makes the Gradients panel recompute that class over the
box and say so in its title, the Faithfulness panel follow the same target, and a one-pixel region
makes the Receptive field panel draw that output pixel's field."""

from __future__ import annotations

from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.segmentation.fully_convolutional import fully_convolutional_model
from tests.ui.conftest import make_window

EGYPTIAN_CAT = 285
BOX = (0.05, 0.1, 0.55, 0.6)


def test_a_region_is_what_the_views_explain(qtbot, settings):
    window = make_window(qtbot, settings)
    try:
        window.controller.open_sample("chelsea")
        qtbot.waitUntil(lambda: window.session.image is not None, timeout=30000)
        model = fully_convolutional_model(load_model("mobilenet_v2"), side=224)
        window.controller.show_model_on(model, window.session.image, "fully convolutional")
        panel = window.gradients
        window.docks["gradients"].raise_()
        qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].target.class_index is not None,
                        timeout=30000)
        assert panel.results[0].target.box is None
        assert "over the whole 7×7 class map" in panel.info.text()
        whole = panel.results[0].attribution.copy()

        window.session.select(class_index=EGYPTIAN_CAT, region=BOX)
        qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].target.box == BOX, timeout=30000)
        target = panel.results[0].target
        assert target.class_index == EGYPTIAN_CAT
        assert "class 285 (Egyptian cat) over a box (10-60% across, 5-55% down the input)" in panel.info.text()
        assert (panel.results[0].attribution != whole).any()
        assert window.faithfulness.target() == target
        assert "over a box" in window.faithfulness.describe(target)

        pixel = (3 / 7, 2 / 7, 4 / 7, 3 / 7)               # one position of the 7×7 map: row 3, column 2
        window.session.select(region=pixel)
        qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].target.box == pixel, timeout=30000)
        assert "at one position of the 7×7 class map (row 3, column 2)" in panel.info.text()
        field_panel = window.receptive_field
        window.docks["receptive_field"].raise_()
        qtbot.waitUntil(lambda: field_panel.result is not None and field_panel.result.layer == "", timeout=30000)
        assert field_panel.result.neuron == (3, 2) and "Output pixel" in field_panel.title.text()
        assert field_panel.box.isVisible() and "Theoretical field" in field_panel.details.text()
        field_panel._on_layer_clicked(1.2, 5.7)            # a click on the class map moves the region
        assert window.session.selection.region == (1 / 7, 5 / 7, 2 / 7, 6 / 7)
        qtbot.waitUntil(lambda: field_panel.result.neuron == (1, 5), timeout=30000)
    finally:
        window.jobs.runner.close()
