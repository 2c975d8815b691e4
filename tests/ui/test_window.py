"""The main window as a user drives it: first view, drops, shared selection, settings, messages."""


from __future__ import annotations

import numpy as np
from PIL import Image
from skimage import data

from cnnviewer.ui.window_menus import remember_recent
from tests.ui.conftest import drop_files, make_window

CAT_INDICES = range(281, 286)   # ImageNet cats


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


def test_a_drop_on_a_floating_panel_is_routed_like_one_on_the_window(window, qtbot, tmp_path):
    """The drop filter watches each window: a floating panel is a window of its own."""
    path = tmp_path / "rocket.png"
    Image.fromarray(data.rocket()).save(path)
    dock = window.docks["feature_maps"]
    dock.setFloating(True)
    qtbot.waitUntil(lambda: dock.isWindow() and dock.windowHandle() is not None, timeout=5000)
    qtbot.wait(50)                                  # the filter is installed on the next turn
    try:
        drop_files(window.feature_maps.canvas.viewport(), [path])
        qtbot.waitUntil(lambda: window.session.image is not None and window.session.image.name == "rocket.png",
                        timeout=20000)
    finally:
        dock.setFloating(False)


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
    remember_recent(first, str(tmp_path / "a.png"))
    first.close()
    second = make_window(qtbot, settings)
    assert (second.size().width(), second.size().height()) == size
    assert not second.docks["filters"].isVisible()
    assert second.recent_files() == [str(tmp_path / "a.png")]
    assert second.recent_menu.actions()[0].text() == "a.png"
    second.reset_layout()
    assert second.docks["filters"].isVisible()
    second.close()


def test_a_floating_panel_comes_back_on_screen_and_open(qtbot, settings):
    """A dock floated (here: to where a second screen was) reopens visible, inside this screen."""
    first = make_window(qtbot, settings)
    dock = first.docks["receptive_field"]
    dock.setFloating(True)
    dock.setGeometry(-4000, -3000, 500, 400)
    first.close()
    second = make_window(qtbot, settings)
    dock = second.docks["receptive_field"]
    qtbot.waitUntil(lambda: dock.isFloating() and dock.isVisible(), timeout=5000)
    qtbot.waitUntil(lambda: second.screen().availableGeometry().contains(dock.frameGeometry()), timeout=5000)
    assert dock.toggleViewAction().isChecked()
    dock.move(-4000, -3000)                      # what restoreState does with a vanished screen's position
    assert not second.screen().availableGeometry().contains(dock.frameGeometry())
    second.bring_floating_docks_forward()        # also raises it: checked by eye under Xvfb + openbox
    assert second.screen().availableGeometry().contains(dock.frameGeometry())
    second.close()


def test_export_current_panel(window, tmp_path):
    out = tmp_path / "panel.png"
    assert window.export_dock(window.docks["feature_maps"], str(out))
    assert Image.open(out).size[0] > 100
    window.setFocus()                                                  # no panel holds the keyboard focus
    assert window.current_dock() is window.docks["feature_maps"]     # the tab in front
    window.docks["architecture"].raise_()
    assert window.current_dock() is window.docks["architecture"]     # Ctrl+E exports what is in front


def test_busy_work_does_not_hide_messages(window, qtbot):
    window.show_message("Something to read")
    window.controller.load_model("resnet18")
    assert window.busy_label.isVisible() and "Loading resnet18" in window.busy_label.text()
    assert window.cancel_button.isVisible()
    assert window.statusBar().currentMessage() == "Something to read"
    qtbot.waitUntil(lambda: not window.jobs.runner.is_busy() and window.session.model.name == "resnet18",
                    timeout=30000)
    qtbot.waitUntil(lambda: not window.busy_label.isVisible(), timeout=10000)
    assert window.statusBar().currentMessage() == "Loaded resnet18: no weights offline: untrained"   # row 36


def test_window_fits_the_screen_it_opens_on(qtbot, settings):
    """A first launch (1400×880) and a layout saved on a bigger screen both fit; so does the minimum size."""
    window = make_window(qtbot, settings)
    try:
        available = window.screen().availableGeometry()
        assert available.contains(window.frameGeometry()), (available, window.frameGeometry())
        minimum = window.minimumSizeHint()
        assert minimum.width() <= 1280 and minimum.height() <= 768 - 40    # laptops, with a task bar
        window.resize(3000, 2000)
        window.save_settings()
    finally:
        window.jobs.runner.close()
        window.close()
    again = make_window(qtbot, settings)
    try:
        assert again.screen().availableGeometry().contains(again.frameGeometry())
    finally:
        again.jobs.runner.close()


def test_clicking_a_prediction_bar_makes_it_the_gradient_target(window, qtbot):
    from PySide6.QtCore import QPoint, QPointF, Qt

    chart = window.predictions.chart
    second = window.predictions.predictions[1]
    scene_point = chart.getViewBox().mapViewToScene(QPointF(0.05, 1.0))   # on the second bar
    view_point = chart.mapFromScene(scene_point)
    qtbot.mouseClick(chart.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(int(view_point.x()), int(view_point.y())))
    qtbot.waitUntil(lambda: window.session.selection.class_index == second.index, timeout=5000)
    assert window.gradients.target_kind.currentText() == "chosen class"
    assert window.gradients.class_box.currentIndex() == second.index


def test_help_lists_shortcuts_and_versions_without_importing_torch_for_it(window):
    from cnnviewer.ui import help_menu

    shortcuts = dict((what, keys) for keys, what in help_menu.shortcuts(window))
    assert shortcuts["Choose model…"] and shortcuts["Export current panel as PNG…"]
    about = help_menu.about_text(window.session.model)
    assert "torch 2.14.1" in about and "Qt 6." in about and "Device: cpu" in about


def test_image_folder_browsing_recent_entries_messages_and_help(window, qtbot, tmp_path, monkeypatch):
    import torch
    import torchvision

    from cnnviewer.ui import file_dialogs

    folder = tmp_path / "photos"
    folder.mkdir()
    for name, picture in (("a_chelsea.png", data.chelsea()), ("b_coffee.png", data.coffee()),
                          ("c_rocket.png", data.rocket())):
        Image.fromarray(picture).save(folder / name)
    drop_files(window, [folder])                                       # a dropped folder: browse it
    qtbot.waitUntil(lambda: window.session.image.name == "a_chelsea.png", timeout=20000)
    assert window.folder_browser.isVisibleTo(window) and "1 / 3" in window.folder_browser.label.text()
    menu = {a.text().replace("&", ""): a for a in window.menuBar().actions()[0].menu().actions()}
    assert menu["Next image in folder"].shortcut().toString() == "PgDown"
    menu["Next image in folder"].trigger()
    qtbot.waitUntil(lambda: window.session.image.name == "b_coffee.png", timeout=20000)
    window.folder_browser.previous_button.click()
    window.folder_browser.previous_button.click()                      # wraps round to the last
    qtbot.waitUntil(lambda: window.session.image.name == "c_rocket.png", timeout=20000)
    assert window.recent_files()[0] == str(folder)                     # the folder, not each image in it
    assert window.recent_menu.actions()[0].text() == "folder: photos/"

    torch.manual_seed(0)
    weights = tmp_path / "mnv2.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights)
    window.load_weights(weights)
    qtbot.waitUntil(lambda: window.session.model.weights_path == str(weights), timeout=30000)
    assert window.recent_menu.actions()[0].text() == "weights: mnv2.pth"

    window.show_message("first thing said")
    window.show_message("second thing said")
    window.show_message_log()
    log = window._message_dialog.view.toPlainText()
    assert log.index("first thing said") < log.index("second thing said") and "3 images" in log
    window._message_dialog.close()

    shown = []
    monkeypatch.setattr("cnnviewer.ui.help_menu.QMessageBox.information", lambda *a: shown.append(a[1]))
    monkeypatch.setattr("cnnviewer.ui.help_menu.QMessageBox.about", lambda *a: shown.append(a[1]), raising=False)
    help_actions = window.menuBar().actions()[2].menu().actions()
    for action in help_actions:
        action.trigger()                                               # both open (they used to raise)
    assert len(shown) == len(help_actions) == 2

    file_dialogs.set_last_folder(folder / "a_chelsea.png")
    window.save_settings()
    assert window.settings.value("last_folder") == str(folder)          # dialogs reopen there next run


def test_all_side_by_side_does_not_shrink_the_left_column(qtbot, settings):
    """Trial row 19: the Gradients options row scrolls instead of widening its dock column for good
    (it asked for 961 px and took the left column from 637 to 313 px)."""
    window = make_window(qtbot, settings)
    window.resize(790, 700)   # the offscreen screen is 800 wide
    window.docks["gradients"].raise_()
    gradients = window.gradients   # built on first show; its own minimum width is met from then on
    qtbot.wait(200)           # the first-launch proportions are applied once shown
    left = window.docks["predictions"].width()
    gradients.method.setCurrentText("all, side by side")
    qtbot.wait(100)
    assert abs(window.docks["predictions"].width() - left) <= 4
    assert window.gradients.minimumSizeHint().width() < 700
    window.jobs.runner.close()


def test_dock_tab_titles_are_whole_and_the_chart_has_room_for_five_rows(qtbot, settings):
    """Trial rows 23 and 19: tab bars scroll instead of eliding titles; chart rows are a line apart."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QFontMetrics
    from PySide6.QtWidgets import QTabBar
    window = make_window(qtbot, settings)
    bars = window.findChildren(QTabBar)
    assert bars
    for bar in bars:
        assert bar.elideMode() == Qt.TextElideMode.ElideNone and bar.usesScrollButtons()
    titles = {bar.tabText(i).replace("&&", "&") for bar in bars for i in range(bar.count())}
    assert {"Gradients", "Synthesis", "Receptive field"} <= titles
    line = QFontMetrics(window.predictions.font()).lineSpacing()
    assert window.predictions.chart.minimumHeight() >= 5 * line
    assert window.predictions._elided("a" * 80).endswith("…")
    window.jobs.runner.close()


def test_view_messages_keeps_what_the_panels_say(qtbot, settings):
    """Trial row 20: indexing finished, synthesis saved, capture saved, compare results and
    "Loading … as B" reach View > Messages; progress ticks do not flood it."""
    window = make_window(qtbot, settings)
    window.dataset.folder_label.setText("<b>photos/</b>: indexing for mobilenet_v2 — 48/130 images")
    window.dataset.folder_label.setText("<b>photos/</b>: 130 images indexed for mobilenet_v2; 130 read in 99 s")
    window.synthesis.status.setText("Step 12/256: objective 3.2")
    window.synthesis.status.setText("Saved /tmp/out.png and /tmp/out.json")
    window.live_detection.note("Saved capture-0001.png and .json in /tmp/captures")
    window.compare.names.setText("Loading mnv2.pth as B…")
    window.compare.verdict.setText("Top-1 agrees")
    log = window.messages.text()
    for said in ("Dataset: photos/: 130 images indexed for mobilenet_v2", "Synthesis: Saved /tmp/out.png",
                 "Live detection: Saved capture-0001.png", "Compare: Loading mnv2.pth as B…",
                 "Compare: Top-1 agrees"):
        assert said in log, log
    assert "48/130" not in log and "Step 12/256" not in log
    assert "130 images indexed" in window.dataset.folder_label.text()   # the panel still shows it
    long = "Computing saliency, guided-backprop, deconvnet, grad-cam, integrated-gradients, occlusion of class 38"
    window._on_job_busy("gradients", long)   # row 36: the busy field leaves the status message room
    label = window.busy_label
    assert label.fontMetrics().horizontalAdvance(label.text()) <= 260 and label.toolTip() == long + "…"
    window._on_job_finished("gradients")
    window.jobs.runner.close()


def test_save_dialogs_do_not_open_in_the_folder_just_opened(qtbot, settings, tmp_path, monkeypatch):
    """Trial row 28: opening (or indexing) an image folder must not make it where saves go."""
    from PySide6.QtWidgets import QFileDialog

    from cnnviewer.ui import file_dialogs
    window = make_window(qtbot, settings)
    dataset, saves = tmp_path / "photos", tmp_path / "out"
    dataset.mkdir()
    saves.mkdir()
    monkeypatch.setattr(file_dialogs, "_last_save_folder", [""])
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *_a: str(dataset))
    assert file_dialogs.existing_folder(window, "Open image folder") == str(dataset)
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda _p, _t, start, _f: (asked.append(start), (str(saves / "x.png"), ""))[1])
    file_dialogs.save_file(window, "Save", "synthesis.png", "PNG (*.png)")
    assert not asked[0].startswith(str(dataset)) and asked[0].endswith("synthesis.png")
    file_dialogs.save_file(window, "Save", "again.png", "PNG (*.png)")
    assert asked[1] == str(saves / "again.png")            # the last save folder, next time
    window.close()
    assert settings.value("last_save_folder") == str(saves)


def test_reset_layout_brings_back_the_first_launch_proportions(qtbot, settings):
    """Trial row 19: after the columns were dragged (or pushed by a wide panel), View > Reset layout
    gives the input column its first-launch share of the width and height again, docks back in place."""
    from PySide6.QtCore import Qt

    from cnnviewer.ui.window_layout import LEFT_SHARE, TOP_LEFT_SHARE
    window = make_window(qtbot, settings)
    window.resize(780, 640)
    qtbot.wait(200)
    docks = window.docks

    def shares() -> tuple[float, float]:
        left, right, lower = docks["predictions"], docks["feature_maps"], docks["filters"]
        return (left.width() / (left.width() + right.width()), left.height() / (left.height() + lower.height()))

    first = shares()   # LEFT_SHARE, TOP_LEFT_SHARE where the panels' minimum widths allow (not at 780 px)
    assert first[0] <= LEFT_SHARE + 0.02 and abs(first[1] - TOP_LEFT_SHARE) < 0.05
    window.resizeDocks([docks["predictions"], docks["feature_maps"]], [150, 600], Qt.Orientation.Horizontal)
    window.resizeDocks([docks["predictions"], docks["filters"]], [450, 100], Qt.Orientation.Vertical)
    docks["gradients"].setFloating(True)
    docks["filters"].hide()
    qtbot.wait(50)
    assert abs(shares()[0] - first[0]) > 0.03 and abs(shares()[1] - first[1]) > 0.1
    window.reset_layout()
    qtbot.waitUntil(lambda: abs(shares()[0] - first[0]) < 0.012 and abs(shares()[1] - first[1]) < 0.03, timeout=3000)
    assert not docks["gradients"].isFloating() and docks["filters"].isVisible()
    assert docks["gradients"] in window.tabifiedDockWidgets(docks["feature_maps"])
    window.close()
