"""A training run's checkpoint folder in the real window: the strip moves every panel through it.

Checkpoints of the real MobileNetV2 where checkpoint k's classifier favours one class (so its
predictions say which checkpoint every panel shows) and its first conv moved a little further.
The browser's races (a second folder opened while the first moves, ▶ then ◀, Follow on a folder
whose files or whole self are deleted, a slider move during the drift) run against the real
CheckpointBrowser and job thread with a stub controller, so they need no window.
"""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from PySide6.QtCore import QObject, Qt, Signal

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


# ------------------------------------------------------------------ the browser alone (a stub controller)

class StubController(QObject):
    """What CheckpointBrowser asks of the window's controller, without the panels."""

    model_loaded, message = Signal(object), Signal(str)
    device = None

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session

    def show_checkpoint(self, model, note: str) -> None:
        self.session.set_model(model, keep_selection=True)

    def show_model_on(self, model, image, note: str) -> None:
        self.session.set_model(model)
        self.model_loaded.emit(model)


@pytest.fixture(scope="module")
def mobilenet():
    from cnnviewer.engine.models.loading import load_model
    torch.set_num_threads(1)
    return load_model("mobilenet_v2")


@pytest.fixture
def browser(qtbot, mobilenet):
    from cnnviewer.engine.jobs import JobRunner
    from cnnviewer.engine.media.images import sample_image
    from cnnviewer.engine.session import Session
    from cnnviewer.ui.checkpoints import CheckpointBrowser
    from cnnviewer.ui.jobs import UiJobs
    session = Session()
    session.set_model(mobilenet)
    session.set_image(sample_image("chelsea"))
    runner = JobRunner()
    controller = StubController(session)
    browser = CheckpointBrowser(session, UiJobs(runner), controller)
    browser.messages = []
    controller.message.connect(browser.messages.append)
    yield browser
    browser.close()
    runner.close()


def run_folder(root, name: str, mobilenet, count: int):
    folder = root / name
    folder.mkdir()
    state = mobilenet.module.state_dict()
    for k in range(count):
        torch.save(checkpoint(state, k % len(CLASSES)), folder / f"epoch_{k}.pt")
    return folder


def test_back_and_forth_before_the_first_load_lands_ends_where_asked(qtbot):
    from cnnviewer.ui.checkpoint_bar import CheckpointBar

    class Browser(QObject):
        listed, shown, closed, follow_changed = Signal(object), Signal(int), Signal(), Signal(bool)
        folder, index = None, 0

        def __init__(self) -> None:
            super().__init__()
            self.requests, self.checkpoints = [], ()

        def show(self, index: int) -> None:
            self.requests.append(index)

        def set_follow(self, on: bool) -> None:
            pass

        def close(self) -> None:
            pass

    browser = Browser()
    bar = CheckpointBar(browser)
    qtbot.addWidget(bar)
    browser.checkpoints = tuple(type("C", (), {"label": f"epoch {i}", "path": f"/run/e{i}.pt"}) for i in range(3))
    browser.listed.emit(browser.checkpoints)
    browser.shown.emit(0)
    bar.step(1)      # Alt+Right: the load of 1 is still running (browser.index is still 0)
    bar.step(-1)     # Alt+Left at once: asked again, so it supersedes the load of 1
    assert browser.requests == [1, 0] and bar.slider.value() == 0
    browser.follow_changed.emit(False)
    assert not bar.follow.isChecked()


def test_a_second_folder_opens_even_if_the_first_moves_meanwhile(browser, qtbot, tmp_path, mobilenet):
    first, second = run_folder(tmp_path, "A", mobilenet, 2), run_folder(tmp_path, "B", mobilenet, 3)
    browser.open_folder(first)
    qtbot.waitUntil(lambda: browser.index == 1, timeout=30000)
    browser.open_folder(second)
    browser.show(0)            # Alt+Left (or a Follow arrival) in A right after: B still opens
    qtbot.waitUntil(lambda: browser.folder.name == "B" and browser.index == 2, timeout=30000)
    qtbot.wait(200)
    assert browser.folder.name == "B" and browser._session.model.weights_path == str(second / "epoch_2.pt")

    browser.open_folder(first)  # another model loaded before A's opening lands: A is not opened over it
    browser._controller.model_loaded.emit(mobilenet)
    qtbot.wait(1500)
    assert not browser.is_open and browser._session.model.weights_path == str(second / "epoch_2.pt")


def test_follow_drops_deleted_checkpoints_and_stops_when_the_folder_is_gone(browser, qtbot, tmp_path, mobilenet):
    folder = run_folder(tmp_path, "run", mobilenet, 4)
    browser.open_folder(folder)
    qtbot.waitUntil(lambda: browser.index == 3, timeout=30000)
    browser.set_follow(True)
    (folder / "epoch_0.pt").unlink()                     # save_top_k deletes an old one
    qtbot.waitUntil(lambda: len(browser.checkpoints) == 3, timeout=10000)
    assert browser.index == 2 and browser.checkpoints[2].path == str(folder / "epoch_3.pt")
    assert any("1 deleted" in m for m in browser.messages)
    (folder / "epoch_3.pt").unlink()                     # the one on screen: kept shown, said once
    qtbot.waitUntil(lambda: any("epoch_3.pt was deleted" in m for m in browser.messages), timeout=10000)
    assert len(browser.checkpoints) == 3 and browser.index == 2
    shutil.rmtree(folder)                                 # the whole folder: one line, Follow off
    qtbot.waitUntil(lambda: not browser.follow, timeout=10000)
    assert not browser.timer.isActive() and [m for m in browser.messages if m.startswith("Follow stopped")] == [
        "Follow stopped: run: the folder is gone or unreadable (No such file or directory)"]


def test_a_slider_move_does_not_wait_behind_the_drift(browser, qtbot, tmp_path, mobilenet):
    folder = run_folder(tmp_path, "run", mobilenet, 8)
    browser.open_folder(folder)
    qtbot.waitUntil(lambda: browser.index == 7, timeout=30000)
    landed = []
    browser.shown.connect(lambda index: landed.append((index, len(browser.drift), time.monotonic())))
    browser.request_drift()
    qtbot.wait(50)
    browser.show(0)
    qtbot.waitUntil(lambda: len(browser.drift) == 8, timeout=60000)
    assert landed and landed[0][:2] == (0, 0)            # the move landed before the drift was done
    reads = browser._drift_memo["cache"].reads
    browser.request_drift()                               # measured once: a new request reads nothing
    qtbot.waitUntil(lambda: not browser._jobs.runner.is_busy(), timeout=30000)
    assert browser._drift_memo["cache"].reads == reads
