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
