"""A training run's checkpoint folder in the real window: the strip moves every panel through it.

Checkpoints of the real MobileNetV2 where checkpoint k's classifier favours one class (so its
predictions say which checkpoint every panel shows) and its first conv moved a little further.
"""

from __future__ import annotations

import torch
from PySide6.QtCore import Qt

from cnnviewer.engine.runtime.hooks import record_outputs
from cnnviewer.engine.runtime.inference import prepare_input
from tests.ui.conftest import drop_files

CLASSES = (1, 340, 963, 388, 130)   # goldfish, zebra, pizza, giant panda, flamingo


def checkpoint(state: dict, k: int) -> dict:
    """Checkpoint k: class CLASSES[k] lifted far above the rest, the first conv moved by k steps."""
    moved = {key: value.clone() for key, value in state.items()}
    moved["classifier.1.bias"][CLASSES[k]] += 40.0
    generator = torch.Generator().manual_seed(k)
    weight = moved["features.0.0.weight"]
    moved["features.0.0.weight"] = weight + 0.2 * k * float(weight.std()) * torch.randn(weight.shape, generator=generator)
    return {"state_dict": moved, "epoch": k, "global_step": 100 * k}


def layer_output(model, image, layer: str) -> torch.Tensor:
    inputs = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels)
    with torch.inference_mode(), record_outputs(model.module, [layer], clone=[layer]) as out:
        model.module(inputs.tensor)
    return out[layer][0]


def top1(window) -> int | None:
    predictions = window.predictions.predictions
    return predictions[0].index if predictions else None


def test_the_strip_moves_every_panel_and_follow_picks_up_a_new_checkpoint(window, qtbot, tmp_path):
    session, browser, bar = window.session, window.checkpoints, window.checkpoint_bar
    original = window.session.model
    state = {k: v.clone() for k, v in original.module.state_dict().items()}
    run = tmp_path / "run"
    run.mkdir()
    for k in range(4):
        torch.save(checkpoint(state, k), run / f"epoch={k}-step={100 * k}.ckpt")
    (run / "epoch=1-step=150.ckpt").write_bytes(b"PK\x03\x04 a corrupt checkpoint")   # listed, never loaded
    session.select(layer="features.3", channel=5)
    assert not bar.isVisible()

    window.docks["compare"].raise_()
    drop_files(window.compare.drift_plot.viewport(), [run])          # a folder dropped on Compare: the series
    qtbot.waitUntil(lambda: browser.index == 4, timeout=60000)      # the newest: epoch 3
    assert bar.isVisible() and bar.label.text() == "epoch 3 · step 300 (5 of 5)"
    assert [c.label for c in browser.checkpoints][1:3] == ["epoch 1 · step 100", "epoch 1 · step 150"]
    qtbot.waitUntil(lambda: top1(window) == CLASSES[3], timeout=30000)
    assert session.selection.layer == "features.3" and session.selection.channel == 5   # kept
    plot = window.compare.series_plot
    qtbot.waitUntil(lambda: len(plot.drift) == 5, timeout=60000)        # drift against the checkpoint
    assert plot.isVisible() and list(plot.x) == [0, 100, 150, 200, 300]   # epochs repeat: x is the step
    assert not window.compare.table.isVisible()                      # no B: the series has the room
    weights = [d.weights for d in plot.drift]
    assert plot.drift[2].error and weights[0] == 0.0 and weights[1] < weights[3] < weights[4]
    assert plot.drift[4].activation > plot.drift[1].activation > 0.0 and plot.drift[4].layer == "features.3"
    assert plot.marker.xData is not None and plot.marker.xData[0] == plot.x[4]
    plot.point_clicked.emit(0)                                         # a click on the plot: checkpoint 0
    qtbot.waitUntil(lambda: browser.index == 0 and top1(window) == CLASSES[0], timeout=30000)
    assert bar.slider.value() == 0
    from PySide6.QtCore import QPoint
    from PySide6.QtTest import QTest
    groove_end = QPoint(bar.slider.width() - 3, bar.slider.height() // 2)
    QTest.mouseClick(bar.slider, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, groove_end)
    assert bar.slider.value() == bar.slider.maximum()                 # a click on the groove jumps there
    qtbot.waitUntil(lambda: browser.index == bar.slider.maximum(), timeout=30000)
    plot.point_clicked.emit(0)
    qtbot.waitUntil(lambda: browser.index == 0 and bar.slider.value() == 0, timeout=30000)

    window.docks["feature_maps"].raise_()
    bar.slider.setValue(1)                                             # epoch 1: every visible panel shows it
    qtbot.waitUntil(lambda: browser.index == 1 and session.forward is not None
                    and top1(window) == CLASSES[1]
                    and window.feature_maps.view is not None
                    and window.filters.view is not None, timeout=30000)
    model = session.model
    assert model.weights_path == str(run / "epoch=1-step=100.ckpt") and model.name == "mobilenet_v2"
    assert session.selection.layer == "features.3" and session.selection.channel == 5
    expected = layer_output(model, session.image, "features.3")
    qtbot.waitUntil(lambda: window.feature_maps.view.values.shape == expected.shape
                    and torch.allclose(torch.from_numpy(window.feature_maps.view.values), expected, atol=1e-4),
                    timeout=30000)
    first_layer = model.module.features[0][0].weight
    assert not torch.equal(first_layer, original.module.features[0][0].weight)
    qtbot.waitUntil(lambda: window.filters.view.stats.shape == tuple(first_layer.shape)
                    and abs(window.filters.view.stats.std - float(first_layer.std(correction=0))) < 1e-5, timeout=30000)

    window.docks["gradients"].raise_()                                 # gradients of checkpoint 1's top-1
    qtbot.waitUntil(lambda: bool(window.gradients.results)
                    and window.gradients.results[0].target.class_index == CLASSES[1], timeout=60000)
    window.docks["feature_maps"].raise_()

    bar.slider.setValue(2)                                             # the corrupt one: one line, back to 1
    qtbot.waitUntil(lambda: "epoch=1-step=150.ckpt" in window.statusBar().currentMessage(), timeout=30000)
    qtbot.waitUntil(lambda: bar.slider.value() == 1, timeout=5000)
    assert session.model is model

    reads = browser._series.reads
    bar.slider.setSliderDown(True)                                     # a drag across: one load, where it stops
    for value in (2, 3, 4, 3, 2, 3, 4):
        bar.slider.setValue(value)
    bar.slider.setSliderDown(False)
    qtbot.waitUntil(lambda: browser.index == 4 and top1(window) == CLASSES[3],
                    timeout=30000)
    qtbot.wait(300)
    assert browser._series.reads - reads <= 1                          # epoch 3 is still cached: none at all

    bar.follow.setChecked(True)                                        # Follow, on the last one
    torch.save(checkpoint(state, 4), run / "epoch=4-step=400.ckpt")
    new = (run / "epoch=4-step=400.ckpt").read_bytes()
    (run / "epoch=4-step=400.ckpt").write_bytes(new[: len(new) // 2])   # half written
    qtbot.wait(3000)                                                   # three polls: stable, but it does not read
    assert len(browser.checkpoints) == 5 and browser.index == 4
    with (run / "epoch=4-step=400.ckpt").open("ab") as file:
        file.write(new[len(new) // 2:])
    qtbot.waitUntil(lambda: len(browser.checkpoints) == 6 and browser.index == 5
                    and top1(window) == CLASSES[4], timeout=30000)
    assert bar.label.text() == "epoch 4 · step 400 (6 of 6)" and bar.slider.maximum() == 5
    assert session.selection.layer == "features.3" and session.selection.channel == 5

    torch.save(checkpoint(state, 0), run / "epoch=4-step=400.ckpt")   # written again, as Lightning's last.ckpt is
    qtbot.waitUntil(lambda: top1(window) == CLASSES[0], timeout=30000)   # read anew once complete, and shown
    assert len(browser.checkpoints) == 6 and browser.index == 5

    bar.close_action.trigger()                                         # Close: the model shown stays
    assert not bar.isVisible() and not browser.is_open and not browser.timer.isActive()
    assert not window.compare.series_plot.isVisible() and window.compare.table.isVisible()
    assert session.model.weights_path == str(run / "epoch=4-step=400.ckpt")


def test_a_folder_without_checkpoints_is_one_line_and_changes_nothing(window, qtbot, tmp_path):
    (tmp_path / "notes.txt").write_text("no weights here")
    before = window.session.model
    window.open_checkpoints(tmp_path)
    qtbot.waitUntil(lambda: "no checkpoints" in window.statusBar().currentMessage(), timeout=30000)
    assert window.session.model is before and not window.checkpoint_bar.isVisible()
    assert "\n" not in window.statusBar().currentMessage()
