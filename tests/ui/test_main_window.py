"""The main window as a user drives it: drops, layer and channel clicks, bad files, settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication
from skimage import data

from tests.ui.conftest import make_window

CAT_INDICES = range(281, 286)


def drop_files(widget, paths: list[Path]) -> None:
    """Deliver drag-enter then drop with file URLs to `widget`, as a file manager would."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted(), "the window refused the drag"
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def test_first_view_shows_predictions_feature_maps_and_filters(window):
    assert window.session.model.trained
    assert window.predictions.predictions[0].index in CAT_INDICES
    assert "Egyptian cat" in window.predictions.title.text() or "cat" in window.predictions.title.text()
    assert window.feature_maps.view.layer == window.session.selection.layer
    assert window.feature_maps.canvas.has_image()
    assert window.filters.view is not None and window.filters.view.rgb
    assert window.filters.view.layout.count == 32    # MobileNetV2's first conv: 32 filters of 3x3x3
    assert "device: cpu" in window.device_label.text()


def test_dropping_an_image_switches_every_panel(window, qtbot, tmp_path):
    path = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(path)
    before = window.feature_maps.view
    drop_files(window.feature_maps.canvas.viewport(), [path])
    qtbot.waitUntil(lambda: window.predictions.predictions[0].label == "espresso", timeout=20000)
    qtbot.waitUntil(lambda: window.feature_maps.view is not before, timeout=10000)
    assert window.session.image.name == "coffee.png"
    np.testing.assert_array_equal(window.predictions.canvas.image(), data.coffee())
    assert str(path) in window.recent_files()


def test_layer_and_channel_selection_is_shared(window, qtbot):
    tree = window.feature_maps.tree
    tree.setCurrentItem(tree.items["features.4"])                 # widget -> session
    assert window.session.selection.layer == "features.4"
    qtbot.waitUntil(lambda: window.feature_maps.view.layer == "features.4", timeout=10000)
    assert window.feature_maps.view.values.shape == (32, 28, 28)
    layout = window.feature_maps.view.layout
    y, x = layout.tile_origin(layout.tile_of_channel(5))
    window.feature_maps.canvas.clicked.emit(y + 1.0, x + 1.0)     # click tile of channel 5
    assert window.session.selection.channel == 5
    assert window.feature_maps.channel_canvas.has_image()
    assert window.feature_maps.overlay_canvas.image().shape == (224, 224, 3)
    filters = window.filters
    qtbot.waitUntil(lambda: filters.selected_view is not None and filters.selected_view.output_channel == 5,
                    timeout=10000)
    # The block's channels come from its projection conv (32 out), not its 1x1 expansion (144 out).
    assert filters.selected_view.layer == "features.4.conv.2"
    assert filters.selected_view.matches_layer and filters.channel.maximum() == 31
    assert filters.selected_view.layout.count == 144               # one kernel per input channel
    assert filters.view.rgb and filters.view.layer == "features.0.0"
    window.session.select(layer="features.6")                      # session -> widgets
    assert tree.currentItem() is tree.items["features.6"]
    qtbot.waitUntil(lambda: window.feature_maps.view.layer == "features.6", timeout=10000)


def test_sorting_and_normalisation_redraw(window, qtbot):
    view = window.feature_maps.view
    window.feature_maps.sort.setCurrentIndex(window.feature_maps.sort.findData("max"))
    qtbot.waitUntil(lambda: window.feature_maps.view is not view, timeout=10000)
    sorted_view = window.feature_maps.view
    maxima = sorted_view.channel_max[list(sorted_view.layout.order)]
    assert np.all(np.diff(maxima) <= 0)


def test_bad_weights_keep_the_previous_model(window, qtbot, tmp_path):
    model = window.session.model
    top = window.predictions.predictions
    bad = tmp_path / "notes.pth"
    bad.write_text("these are not weights")
    drop_files(window.feature_maps.canvas.viewport(), [bad])
    qtbot.waitUntil(lambda: "Weights not loaded" in window.statusBar().currentMessage(), timeout=10000)
    assert "notes.pth" in window.statusBar().currentMessage()
    assert window.session.model is model
    assert window.predictions.predictions == top

    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), wrong)
    window.load_weights(wrong)
    qtbot.waitUntil(lambda: window.session.model is not model, timeout=30000)
    assert window.session.model.name == "resnet18"                # inferred from the file
    assert window.session.model.categories == ("class 0", "class 1", "class 2")


def test_custom_weights_change_the_predictions(window, qtbot, tmp_path):
    torch.manual_seed(0)
    state = torchvision.models.mobilenet_v2().state_dict()
    path = tmp_path / "random.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    old = window.predictions.predictions
    window.load_weights(path)
    qtbot.waitUntil(lambda: window.session.model.weights_path == str(path), timeout=30000)
    qtbot.waitUntil(lambda: window.predictions.predictions != old, timeout=20000)
    assert window.session.model.name == "mobilenet_v2"
    assert "random.pth" in window.model_label.toolTip()


def test_unsupported_drop_changes_nothing(window, qtbot, tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    image, model = window.session.image, window.session.model
    drop_files(window.predictions.canvas.viewport(), [path])
    assert "Not an image or weights file" in window.statusBar().currentMessage()
    assert window.session.image is image and window.session.model is model


def test_corrupt_image_keeps_the_previous_image(window, qtbot, tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(Image.new("RGB", (64, 64)).tobytes()[:100])
    image = window.session.image
    window.open_image(path)
    qtbot.waitUntil(lambda: "broken.jpg" in window.statusBar().currentMessage(), timeout=10000)
    assert window.session.image is image


def test_settings_round_trip(qtbot, settings, tmp_path):
    first = make_window(qtbot, settings)
    first.resize(760, 610)   # within the offscreen screen, which clamps restored geometry
    size = (first.size().width(), first.size().height())
    assert size != (1400, 880)
    first.docks["filters"].hide()
    first._remember_recent(str(tmp_path / "a.png"))
    first.close()
    second = make_window(qtbot, settings)
    assert (second.size().width(), second.size().height()) == size
    assert not second.docks["filters"].isVisible()
    assert second.recent_files() == [str(tmp_path / "a.png")]
    assert second.recent_menu.actions()[0].text() == "a.png"
    second.reset_layout()
    assert second.docks["filters"].isVisible()
    second.close()


def test_export_current_panel(window, tmp_path):
    out = tmp_path / "panel.png"
    assert window.export_dock(window.docks["feature_maps"], str(out))
    assert Image.open(out).size[0] > 100


def test_last_model_and_weights_are_remembered(window, qtbot, settings, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), path)
    window.load_weights(path)
    qtbot.waitUntil(lambda: window.session.model.weights_path == str(path), timeout=30000)
    assert settings.value("last_model") == "resnet18"
    assert settings.value("last_weights") == str(path)
    window.controller.load_model("squeezenet1_1")
    qtbot.waitUntil(lambda: window.session.model.name == "squeezenet1_1", timeout=30000)
    assert settings.value("last_model") == "squeezenet1_1" and settings.value("last_weights") == ""
    assert "untrained" in window.model_label.text()
    qtbot.waitUntil(lambda: "squeezenet1_1" in window.predictions.title.text(), timeout=20000)
    assert "untrained" in window.predictions.title.text()


def test_choose_model_dialog_lists_and_filters(qtbot):
    from cnnviewer.ui.dialogs import ChooseModelDialog

    catalogue = {"MobileNet": [("mobilenet_v2", "offline weights pack"), ("mobilenet_v3_large", "download")],
                 "ResNet": [("resnet18", "download"), ("resnet50", "download")]}
    dialog = ChooseModelDialog(catalogue, "mobilenet_v2")
    qtbot.addWidget(dialog)
    assert dialog.chosen() == "mobilenet_v2"
    dialog.search.setText("resnet5")
    root = dialog.tree.invisibleRootItem()
    visible = [root.child(i).child(j).text(0) for i in range(root.childCount())
               for j in range(root.child(i).childCount()) if not root.child(i).child(j).isHidden()]
    assert visible == ["resnet50"]


def test_untrusted_pickle_asks_and_loads_only_when_trusted(window, qtbot, tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = tmp_path / "whole.pth"
    torch.save(torchvision.models.squeezenet1_1(num_classes=5), path)
    answers: list[str] = []
    monkeypatch.setattr("cnnviewer.ui.main_window.ask_trust",
                        lambda _parent, p, _message: answers.append(p) or False)
    model = window.session.model
    window.load_weights(path)
    qtbot.waitUntil(lambda: answers == [str(path)], timeout=10000)
    assert window.session.model is model
    assert "not trusted" in window.statusBar().currentMessage()
    monkeypatch.setattr("cnnviewer.ui.main_window.ask_trust", lambda *_args: True)
    window.load_weights(path)
    qtbot.waitUntil(lambda: window.session.model is not model, timeout=30000)
    assert window.session.model.weights_path == str(path)


def test_startup_never_reruns_an_architecture_file(settings, tmp_path):
    from cnnviewer.ui.app import startup_model

    assert startup_model(None, None, settings) == ("mobilenet_v2", None, "")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    settings.setValue("last_model", "resnet18")
    settings.setValue("last_weights", str(weights))
    assert startup_model(None, None, settings) == ("resnet18", str(weights), "")
    assert startup_model("vgg11", None, settings) == ("vgg11", None, "")
    settings.setValue("last_model", str(tmp_path / "net.py") + ":Net")
    spec, chosen_weights, note = startup_model(None, None, settings)
    assert (spec, chosen_weights) == ("mobilenet_v2", None) and "not reopened" in note


def test_failed_launch_choices_still_leave_a_model(qtbot, settings, tmp_path):
    window = make_window(qtbot, settings)
    bad = tmp_path / "bad.pth"
    bad.write_text("not weights")
    window.controller.load_model("mobilenet_v2", weights=str(bad))
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=30000)
    assert window.session.model.name == "mobilenet_v2"
    qtbot.waitUntil(lambda: "Weights not loaded" in window.statusBar().currentMessage(), timeout=5000)

    other = make_window(qtbot, settings)
    other.controller.load_model("resnet_18")                     # a typo
    qtbot.waitUntil(lambda: other.session.model is not None, timeout=30000)
    assert other.session.model.name == "mobilenet_v2"
    window.jobs.runner.close()
    other.jobs.runner.close()


def test_weights_dropped_while_a_model_loads_go_to_that_model(window, qtbot, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    window.controller.load_model("resnet18")
    window.load_weights(path)                                     # before resnet18 has arrived
    qtbot.waitUntil(lambda: window.session.model.weights_path == str(path), timeout=30000)
    assert window.session.model.name == "resnet18"


GRAY_NET = """
import torch.nn as nn
class Gray(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 3)
    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))
class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 2)
    def forward(self, x):
        return self.fc(x)
"""


def test_grayscale_models_run_and_broken_ones_are_refused(window, qtbot, tmp_path):
    source = tmp_path / "nets.py"
    source.write_text(GRAY_NET)
    window.controller.load_model(f"{source}:Gray")
    qtbot.waitUntil(lambda: window.session.model.name == "nets.py:Gray", timeout=30000)
    assert window.session.model.input_channels == 1
    qtbot.waitUntil(lambda: len(window.predictions.predictions) == 3, timeout=20000)
    assert "nets.py:Gray" in window.predictions.title.text()
    model = window.session.model
    window.controller.load_model(f"{source}:Broken")
    qtbot.waitUntil(lambda: "Model not changed" in window.statusBar().currentMessage(), timeout=30000)
    assert "cannot run" in window.statusBar().currentMessage()
    assert window.session.model is model


def test_cancelling_a_model_load_keeps_the_shown_model(window, qtbot, tmp_path):
    model = window.session.model
    window.controller.load_model("resnet50")
    window._on_cancel_clicked()
    assert window.controller._pending is None
    torch.manual_seed(0)
    path = tmp_path / "mnv2.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
    window.load_weights(path)                          # goes to the model on screen
    qtbot.waitUntil(lambda: window.session.model is not model, timeout=30000)
    assert window.session.model.name == "mobilenet_v2"
    assert window.session.model.weights_path == str(path)


def test_model_summary_panel_sorts_selects_and_exports(window, qtbot, tmp_path):
    panel = window.model_summary
    qtbot.waitUntil(lambda: panel.summary is not None, timeout=30000)
    assert panel.summary.model == "mobilenet_v2" and panel.proxy.rowCount() == len(panel.summary.rows)
    assert f"{3_504_872:,} parameters" in panel.totals.text()      # MobileNetV2's known size
    panel.table.sortByColumn(6, Qt.SortOrder.DescendingOrder)        # MACs, numerically
    macs = [panel.table_model.rows[panel.proxy.mapToSource(panel.proxy.index(i, 0)).row()].macs
            for i in range(panel.proxy.rowCount())]
    assert macs == sorted(macs, reverse=True)
    top = panel.proxy.index(0, 0)
    panel.table.setCurrentIndex(top)                                 # widget -> session
    assert window.session.selection.layer == panel.table_model.rows[panel.proxy.mapToSource(top).row()].name
    window.session.select(layer="features.5.conv.1.0")               # session -> widget
    current = panel.proxy.mapToSource(panel.table.currentIndex()).row()
    assert panel.table_model.rows[current].name == "features.5.conv.1.0"
    panel.search.setText("classifier")
    assert panel.proxy.rowCount() == 2
    out = tmp_path / "summary.csv"
    panel.export_csv(str(out))
    lines = out.read_text().splitlines()
    assert lines[0].startswith("name,type,output_shape") and len(lines) == len(panel.summary.rows) + 1


def test_selecting_a_block_shows_its_last_layer_in_the_summary(window, qtbot):
    panel = window.model_summary
    qtbot.waitUntil(lambda: panel.summary is not None, timeout=30000)
    window.session.select(layer="features.4")
    current = panel.proxy.mapToSource(panel.table.currentIndex()).row()
    assert panel.table_model.rows[current].name == "features.4.conv.3"
    assert window.session.selection.layer == "features.4"        # the block stays selected elsewhere


def test_receptive_field_panel_follows_clicks(window, qtbot):
    panel = window.receptive_field
    window.docks["receptive_field"].raise_()
    window.session.select(layer="features.3")
    qtbot.waitUntil(lambda: panel.result is not None and panel.result.layer == "features.3", timeout=30000)
    assert panel.result.neuron == (28, 28)                        # the centre by default
    panel.layer_canvas.clicked.emit(0.4, 1.8)                     # click a neuron on the layer map
    assert window.session.selection.neuron == (0, 1)
    qtbot.waitUntil(lambda: panel.result.neuron == (0, 1), timeout=10000)
    top, left, bottom, right = panel.result.box
    extent = panel.result.effective_extent
    assert top <= extent[0] and left <= extent[1] and extent[2] <= bottom + 1 and extent[3] <= right + 1
    assert panel.padding_box.isVisible()                          # near the corner: part on padding
    panel.input_canvas.clicked.emit(100.0, 150.0)                 # click the input: nearest neuron
    jump = panel.result.field.jump[0]
    assert window.session.selection.neuron == (round((100 - 0.5) / jump), round((150 - 0.5) / jump))
    assert "Theoretical field" in panel.details.text()


def test_weights_that_cannot_run_keep_the_chosen_model(window, qtbot, tmp_path):
    mlp = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))
    path = tmp_path / "mlp.pt"
    mlp.save(str(path))
    window.controller.load_model("resnet18", weights=str(path))
    qtbot.waitUntil(lambda: window.session.model.name == "resnet18", timeout=30000)
    qtbot.waitUntil(lambda: "Weights not loaded" in window.statusBar().currentMessage(), timeout=5000)
    assert "cannot run" in window.statusBar().currentMessage()


def test_busy_work_does_not_hide_messages(window, qtbot):
    window.show_message("Something to read")
    window.controller.load_model("resnet18")
    assert window.busy_label.isVisible() and "Loading resnet18" in window.busy_label.text()
    assert window.cancel_button.isVisible()
    assert window.statusBar().currentMessage() == "Something to read"
    qtbot.waitUntil(lambda: not window.jobs.runner.is_busy() and window.session.model.name == "resnet18",
                    timeout=30000)
    qtbot.waitUntil(lambda: not window.busy_label.isVisible(), timeout=10000)


def test_architecture_panel_selects_folds_and_exports(window, qtbot, tmp_path):
    panel = window.architecture
    window.docks["architecture"].raise_()
    qtbot.waitUntil(lambda: panel.layout_result is not None, timeout=30000)
    assert panel.graph.method == "torch.fx" and len(panel.graph.nodes) > 150
    assert len(panel.items) == len(panel.layout_result.nodes)
    conv = next(item for item in panel.items.values() if item.placed.node.layer == "features.0.0")
    panel.view.node_clicked.emit(conv)                                   # graph -> session
    assert window.session.selection.layer == "features.0.0"
    assert conv.pen().width() == 3                                       # highlighted
    window.session.select(layer="features.5")                            # session -> graph
    assert conv.pen().width() != 3
    shown = len(panel.items)
    panel.view.node_double_clicked.emit(conv)                            # fold features.0.0's block
    qtbot.waitUntil(lambda: len(panel.items) < shown, timeout=10000)
    block = next(item for item in panel.items.values() if item.placed.node.kind == "block")
    assert "features.0.0" in block.placed.members[0] or len(block.placed.members) > 1
    panel.view.node_double_clicked.emit(block)                           # and open it again
    qtbot.waitUntil(lambda: len(panel.items) == shown, timeout=10000)
    svg, png = tmp_path / "g.svg", tmp_path / "g.png"
    panel.export_svg(str(svg))
    assert panel.export_png(str(png))
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    assert Image.open(png).size[1] > 1000


def test_gradients_panel_methods_targets_and_displays(window, qtbot):
    panel = window.gradients
    window.docks["gradients"].raise_()
    qtbot.waitUntil(lambda: bool(panel.results) and panel.results[0].method == "saliency", timeout=30000)
    assert panel.results[0].target.class_index == window.predictions.predictions[0].index   # top-1
    assert panel.class_box.currentIndex() == panel.results[0].target.class_index
    shown = panel.canvas.image().copy()
    panel.display.setCurrentText("signed")                         # redraw only, no recomputation
    assert not np.array_equal(panel.canvas.image(), shown)
    panel.method.setCurrentText("grad-cam")
    qtbot.waitUntil(lambda: panel.results[0].method == "grad-cam", timeout=30000)
    window.session.select(layer="features.6", channel=3, neuron=(5, 6))
    panel.target_kind.setCurrentText("selected neuron")
    qtbot.waitUntil(lambda: panel.results[0].target.neuron == (5, 6), timeout=30000)
    assert panel.results[0].options["layer"] == "features.6"
    assert "features.6 channel 3" in panel.info.text()


def test_live_detection_on_an_image_folder(window, qtbot, tmp_path):
    panel = window.live_detection
    window.docks["live_detection"].raise_()
    assert "No camera found" in panel.message.text()                 # none here: it offers files
    folder = tmp_path / "frames"
    folder.mkdir()
    photo = data.astronaut()
    Image.fromarray(photo).save(folder / "1.png")
    (folder / "2.png").write_bytes(b"not a png")                     # fails mid-stream
    both = Image.fromarray(photo.copy())
    both.paste(Image.fromarray(photo[40:190, 160:290]).resize((104, 120)), (360, 300))
    both.save(folder / "3.png")
    assert panel.open_file(folder)
    qtbot.waitUntil(lambda: panel.frame is not None and panel.frame.name == "3.png", timeout=60000)
    assert "2.png" in panel.message.text() and "stay" in panel.message.text()
    assert len(panel.shown) == 2 and all(d.label == "face" for d in panel.shown)
    panel.score.setValue(1.0)                                        # the slider refilters at once
    assert len(panel.shown) < 2
    panel.score.setValue(0.5)
    assert "latency" in panel.status.text() and "frames/s" in panel.status.text()
    (tmp_path / "noise.mp4").write_bytes(b"\x00" * 4096)
    assert not panel.open_file(tmp_path / "noise.mp4")               # a bad source: message, state kept
    assert "not a readable video" in panel.message.text() and panel.frame.name == "3.png"
    saved = panel.capture(tmp_path)
    assert saved.exists() and saved.with_suffix(".json").exists()
    assert window.session.image.name == saved.name                   # the frame is every panel's input

    face = max(panel.shown, key=lambda d: d.score)                   # click a face: the panels explain it
    panel.canvas.clicked.emit((face.box[1] + face.box[3]) / 2, (face.box[0] + face.box[2]) / 2)
    assert panel.selected is face
    qtbot.waitUntil(lambda: window.session.model.name.startswith("mtcnn →"), timeout=60000)
    assert window.session.selection.class_index == 0
    qtbot.waitUntil(lambda: bool(window.predictions.predictions)
                    and window.predictions.predictions[0].label.endswith("this detection"), timeout=60000)
    assert window.predictions.predictions[0].probability > 0.9       # its score, re-computed
    gradients = window.gradients
    window.docks["gradients"].raise_()
    assert gradients.target_kind.currentText() == "chosen class" and gradients.class_box.currentIndex() == 0
    qtbot.waitUntil(lambda: bool(gradients.results) and gradients.results[0].target.class_index == 0,
                    timeout=60000)
    attribution = np.abs(gradients.results[0].attribution).sum(0)
    height, width = panel.frame.pixels.shape[:2]
    top = (max(height, width) - height) // 2                       # the frame sits letterboxed in a square
    assert attribution.shape == (max(height, width),) * 2
    ys, xs = np.unravel_index(np.argsort(attribution.ravel())[-100:], attribution.shape)
    assert face.box[1] + top - 20 <= np.median(ys) <= face.box[3] + top + 20
    assert face.box[0] - 20 <= np.median(xs) <= face.box[2] + 20     # the face's score comes from the face


def test_live_detection_video_with_a_two_stage_detector(window, qtbot, astronaut_clip):
    """Random-initialised Faster R-CNN (no COCO weights offline) through the whole pipeline."""
    panel = window.live_detection
    window.docks["live_detection"].raise_()
    panel.detector.setCurrentText("fasterrcnn_mobilenet_v3_large_320_fpn")
    assert panel.open_file(astronaut_clip.video)
    qtbot.waitUntil(lambda: panel.result is not None
                    and panel.result.detector.name == "fasterrcnn_mobilenet_v3_large_320_fpn", timeout=60000)
    assert "untrained" in panel.status.text() and panel.frame.name.startswith("astronaut.mp4#")
    panel.toggle_pause()
    qtbot.wait(500)
    panel.score.setValue(0.0)
    panel.iou.setValue(0.3)
    strict = len(panel.shown)
    panel.iou.setValue(1.0)                                          # NMS off: every raw box above the score
    assert len(panel.shown) == len(panel.raw) > strict
    panel.iou.setValue(0.5)
    panel.view.setCurrentIndex(1)                                    # before NMS | after NMS, side by side
    assert panel.canvas.image().shape[1] == 2 * 640 + 8
    panel.view.setCurrentIndex(2)                                    # RPN proposals, then anchors on click
    proposals_only = panel.canvas.image().copy()
    panel.canvas.clicked.emit(240.0, 320.0)
    assert not np.array_equal(panel.canvas.image(), proposals_only) and "anchors" in panel.status.text()
    panel.view.setCurrentIndex(0)
    box = panel.shown[0].box
    panel.canvas.clicked.emit((box[1] + box[3]) / 2, (box[0] + box[2]) / 2)
    assert panel.selected is not None
    shown_index = panel.frame.index
    panel.step()                                                     # one more frame while paused
    qtbot.waitUntil(lambda: panel.frame.index > shown_index, timeout=30000)


def test_camera_frames_reach_the_detector(window, qtbot):
    """The camera path without a camera: Qt video frames as the sink delivers them."""
    from PySide6.QtGui import QImage
    from PySide6.QtMultimedia import QVideoFrame

    panel = window.live_detection
    photo = np.ascontiguousarray(data.astronaut())
    image = QImage(photo.data, 512, 512, 512 * 3, QImage.Format.Format_RGB888).convertToFormat(
        QImage.Format.Format_ARGB32)                                # cameras deliver 32-bit frames
    panel._on_video_frame(QVideoFrame(image))
    qtbot.waitUntil(lambda: panel.frame is not None and panel.frame.name == "camera", timeout=60000)
    assert np.array_equal(panel.frame.pixels, photo)                # colours and layout kept
    assert len(panel.shown) == 1 and panel.shown[0].label == "face"


def test_trust_never_applies_to_remembered_weights(qtbot, settings, tmp_path, monkeypatch):
    """`cnnviewer --trust` without --weights: the remembered pickle is not unpickled unasked."""
    import argparse

    from cnnviewer.ui.app import start_window

    torch.manual_seed(0)
    pickled = tmp_path / "whole.pth"
    torch.save(torchvision.models.squeezenet1_1(num_classes=5), pickled)
    settings.setValue("last_model", "squeezenet1_1")
    settings.setValue("last_weights", str(pickled))
    asked: list[str] = []
    monkeypatch.setattr("cnnviewer.ui.main_window.ask_trust",
                        lambda _parent, path, _message: asked.append(path) or False)
    args = argparse.Namespace(image=None, model=None, weights=None, labels=None, trust=True,
                              device=None, precision="fp32")
    window = start_window(args, settings, 0.0)
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: asked == [str(pickled)], timeout=30000)
        qtbot.waitUntil(lambda: window.session.model is not None, timeout=30000)
        assert window.session.model.weights_path != str(pickled)
    finally:
        window.jobs.runner.close()
