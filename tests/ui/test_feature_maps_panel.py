"""The feature-maps panel: sorting and normalisation."""


from __future__ import annotations

import numpy as np


def test_sorting_and_normalisation_redraw(window, qtbot):
    view = window.feature_maps.view
    window.feature_maps.sort.setCurrentIndex(window.feature_maps.sort.findData("max"))
    qtbot.waitUntil(lambda: window.feature_maps.view is not view, timeout=10000)
    sorted_view = window.feature_maps.view
    maxima = sorted_view.channel_max[list(sorted_view.layout.order)]
    assert np.all(np.diff(maxima) <= 0)


def test_logit_cells_differ_and_a_click_chooses_that_class(window, qtbot):
    panel, session = window.feature_maps, window.session
    assert panel.normalisation.currentData() == "channel"
    session.select(layer="classifier.1")
    qtbot.waitUntil(lambda: panel.view is not None and panel.view.layer == "classifier.1", timeout=20000)
    view = panel.view
    assert view.values.shape == (1000, 1, 1)
    colours = {tuple(view.mosaic[view.layout.tile_origin(t)]) for t in range(1000)}
    assert len(colours) > 50                                            # scaled per layer: values differ
    y, x = view.layout.tile_origin(view.layout.tile_of_channel(130))
    panel._on_canvas_clicked(y + 1.2, x + 0.3)                          # on the gap below the cell: still it
    assert session.selection.channel == 130 and session.selection.class_index == 130
    assert panel.canvas.highlight.isVisible() and panel.detail.isVisible()
    assert "class 130 (flamingo)" in window.synthesis.target_label.text()
    assert window.gradients.target().class_index == 130
    session.select(layer="features.14", channel=3)                      # a conv channel: no class change
    qtbot.waitUntil(lambda: panel.view.layer == "features.14", timeout=20000)
    panel._on_canvas_clicked(*panel.view.layout.tile_origin(panel.view.layout.tile_of_channel(5)))
    assert session.selection.channel == 5 and session.selection.class_index == 130


def test_enlarged_channel_and_overlay_use_about_half_the_panel(window, qtbot):
    panel = window.feature_maps
    window.docks["feature_maps"].raise_()
    window.session.select(layer="features.4", channel=0)
    qtbot.waitUntil(lambda: panel.detail.isVisible() and panel.channel_canvas.has_image(), timeout=20000)
    qtbot.wait(50)
    mosaic_and_detail = panel._vertical.height()
    assert panel.channel_canvas.height() >= 0.35 * mosaic_and_detail   # the pictures, not a band around a caption
    assert panel.overlay_canvas.height() == panel.channel_canvas.height()
