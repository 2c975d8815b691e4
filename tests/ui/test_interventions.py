"""Knock-outs in the window (issue 24): the strip, every panel recomputing with the selection kept,
the predictions' ghost bars and Δ, removal, failure, and a new model clearing them. Real ImageNet
MobileNetV2 on the cat photo."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviewer.engine.experiments.ablate_spec import Knockout
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.ui.widgets.interventions import InterventionStrip


@pytest.fixture(autouse=True)
def one_torch_thread():
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_strip_lists_and_removes(qtbot):
    strip = InterventionStrip()
    qtbot.addWidget(strip)
    assert strip.isHidden()
    strip.set_interventions([Knockout("features.3", (1, 2)), Knockout("fc", (0,), "scale", factor=0.5)])
    assert not strip.isHidden() and strip.descriptions == ["features.3 ch 1,2: zero", "fc ch 0: scale ×0.5"]
    with qtbot.waitSignal(strip.remove_requested) as removed:
        strip.remove_buttons()[1].click()
    assert removed.args == [1]
    with qtbot.waitSignal(strip.clear_requested):
        strip.clear_button.click()
    strip.set_interventions([])
    assert strip.isHidden() and strip.remove_buttons() == []


def test_knockout_recomputes_every_panel_and_clears(window, qtbot):
    session, controller, strip = window.session, window.controller, window.intervention_strip
    intact = session.model
    assert strip.isHidden()
    session.select(layer="features.16", channel=7, class_index=285)
    qtbot.waitUntil(lambda: window.feature_maps.view is not None and window.feature_maps.view.layer == "features.16",
                    timeout=20000)
    before_maps = window.feature_maps.view.mosaic.copy()
    cat = window.predictions.predictions[0]
    assert cat.label == "Egyptian cat"

    controller.add_knockout(Knockout("features.14", tuple(range(0, 160, 2))))
    qtbot.waitUntil(lambda: session.model is not intact and session.effect is not None, timeout=30000)
    qtbot.waitUntil(lambda: window.feature_maps.view is not None
                    and not np.array_equal(window.feature_maps.view.mosaic, before_maps), timeout=30000)
    assert session.model.intact is intact and session.selection.layer == "features.16"
    assert (session.selection.channel, session.selection.class_index) == (7, 285)
    assert not strip.isHidden() and strip.descriptions == [session.model.interventions[0].describe()]
    predictions = window.predictions
    qtbot.waitUntil(lambda: any("pts" in d for d in predictions.deltas), timeout=20000)
    rows = {p.index: row for row, p in enumerate(predictions.predictions)}
    shown = predictions.predictions[rows[285]].probability if 285 in rows else None
    effect = session.effect
    intact_cat = dict((i, p) for _l, i, p in effect.intact_top)[285]
    assert intact_cat == pytest.approx(cat.probability, abs=1e-6)
    if shown is not None:     # the Δ printed is the change of this class, in points
        points = 100 * (shown - intact_cat)
        assert f"{abs(points):.1f} pts" in predictions.deltas[rows[285]]
    else:
        assert "left the top-5: Egyptian cat" in predictions.title.text()
    assert not has_hooks(intact.module)

    controller.add_knockout(Knockout("classifier.1", (285,)))        # the cat's logit to zero
    qtbot.waitUntil(lambda: len(session.interventions) == 2 and session.effect is not None
                    and session.effect.model_token == session.model.token, timeout=30000)
    qtbot.waitUntil(lambda: "left the top-5: Egyptian cat" in predictions.title.text(), timeout=20000)
    assert len(strip.remove_buttons()) == 2

    strip.remove_buttons()[0].click()          # × on the first: the logit knock-out stays
    qtbot.waitUntil(lambda: len(session.interventions) == 1, timeout=30000)
    assert session.interventions[0].layer == "classifier.1" and session.model.intact is intact

    strip.clear_button.click()
    qtbot.waitUntil(lambda: session.model is intact and strip.isHidden(), timeout=30000)
    qtbot.waitUntil(lambda: bool(predictions.predictions) and predictions.predictions[0].label == "Egyptian cat"
                    and not any(predictions.deltas), timeout=20000)
    assert session.selection.layer == "features.16" and session.selection.class_index == 285


def test_two_quick_knockouts_both_land(window, qtbot):
    """The second request while the first is built adds to it instead of replacing it."""
    session = window.session
    intact = session.model
    window.controller.add_knockout(Knockout("features.14", (1,)))
    window.controller.add_knockout(Knockout("features.15", (2,)))
    qtbot.waitUntil(lambda: len(session.interventions) == 2, timeout=30000)
    assert [k.layer for k in session.interventions] == ["features.14", "features.15"]
    assert session.model.intact is intact


def test_failed_knockout_keeps_the_model_and_says_one_line(window, qtbot):
    messages: list[str] = []
    window.controller.message.connect(messages.append)
    model = window.session.model
    window.controller.add_knockout(Knockout("features.3", (999,)))
    qtbot.waitUntil(lambda: any("Knock-out not applied" in m for m in messages), timeout=20000)
    line = next(m for m in messages if "Knock-out not applied" in m)
    assert "\n" not in line and "features.3 has 24 channels" in line
    assert window.session.model is model and window.intervention_strip.isHidden()


def test_mean_over_this_image_and_a_new_model_clears(window, qtbot):
    session = window.session
    window.controller.request_knockout("features.10.conv.1", [0, 9], "mean")
    qtbot.waitUntil(lambda: len(session.interventions) == 1, timeout=30000)
    knockout = session.interventions[0]
    assert knockout.mode == "mean" and knockout.source == "this image" and len(knockout.means) == 2
    assert "mean over this image" in window.intervention_strip.descriptions[0]
    messages: list[str] = []
    window.controller.message.connect(messages.append)
    window.controller.request_knockout("features.10.conv.1", [1], "mean", over="folder")   # no folder open
    assert any("no indexed folder" in m for m in messages)
    window.controller.load_model("resnet18")
    qtbot.waitUntil(lambda: session.model.name == "resnet18", timeout=60000)
    assert session.interventions == () and window.intervention_strip.isHidden()


def test_mean_over_the_indexed_folder_keeps_the_intact_index(window, qtbot, tmp_path, monkeypatch):
    """'Mean over the indexed folder' reads the Dataset panel's index; the knock-out is not a new model
    for indexing, so the panel keeps the same index object (nothing re-read or rebuilt)."""
    from PIL import Image
    from skimage import data
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    panel = window.dataset
    panel.open_folder(folder)
    qtbot.waitUntil(lambda: panel.index is not None and len(panel.index.valid_rows) == 3, timeout=60000)
    index = panel.index
    expected = np.asarray(index.array("features.14", "mean"))[np.asarray(index.valid_rows)][:, [1, 4]].mean(axis=0)
    window.controller.request_knockout("features.14", [1, 4], "mean", over="folder")
    qtbot.waitUntil(lambda: len(window.session.interventions) == 1, timeout=30000)
    knockout = window.session.interventions[0]
    assert knockout.source == "folder photos/ (3 images)"
    np.testing.assert_allclose(knockout.means, expected, rtol=1e-6)
    qtbot.wait(300)
    assert panel.index is index and panel._indexed_model is window.session.model.intact


def _action(menu, text: str):
    for action in menu.actions():
        if action.text() == text:
            return action
        if action.menu() is not None:
            found = _action(action.menu(), text)
            if found is not None:
                return found
    return None


def test_feature_maps_picks_and_menu_and_architecture_block(window, qtbot):
    """Ctrl/Shift-click picks tiles; the menu's 'zero' knocks them out; the Architecture graph's
    right-click menu knocks out every channel of a block (counted on the job thread)."""
    session, panel = window.session, window.feature_maps
    session.select(layer="features.5")
    qtbot.waitUntil(lambda: panel.view is not None and panel.view.layer == "features.5", timeout=20000)
    panel.toggle_pick(3)
    panel.toggle_pick(7)
    panel.toggle_pick(9)
    panel.toggle_pick(9)          # a second Ctrl-click takes it out again
    assert panel.picked == [3, 7] and len(panel._pick_marks) == 2
    menu = panel.knockout_menu(panel.picked)
    assert _action(menu, "mean over the indexed folder") is not None and _action(menu, "scale by…") is not None
    _action(menu, "zero").trigger()
    qtbot.waitUntil(lambda: len(session.interventions) == 1, timeout=30000)
    assert session.interventions[0] == Knockout("features.5", (3, 7))
    qtbot.waitUntil(lambda: panel.view is not None and panel.view.values[[3, 7]].max() == 0
                    and panel.view.values.max() > 0, timeout=30000)
    assert panel.picked == []

    window.docks["architecture"].raise_()
    graph = window.architecture
    qtbot.waitUntil(lambda: bool(graph.items) and graph._model_token == session.model.token, timeout=60000)
    qtbot.waitUntil(lambda: any(i.placed.node.label == "knock-out" for i in graph.items.values()), timeout=20000)
    assert not any(i.placed.node.label == "addcmul" for i in graph.items.values())   # named, not a merge
    block = next(item for item in graph.items.values()
                 if item.placed.node.kind == "block" and item.placed.node.label == "features.16.conv")
    _action(graph.knockout_menu(block), "Knock out all its channels").trigger()
    qtbot.waitUntil(lambda: len(session.interventions) == 2, timeout=30000)
    assert session.interventions[1] == Knockout("features.16.conv", tuple(range(160)))
