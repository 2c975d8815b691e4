"""The Synthesis panel in a real window: Run on the selected class, watch the image and the objective
refresh, Stop within a step, Continue from the current image, Save with a recipe that the command
line reproduces; DeepDream from the current input."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image


def test_run_stop_continue_and_save_a_class_ascent(window, qtbot, tmp_path, monkeypatch):
    panel = window.synthesis
    window.docks["synthesis"].raise_()
    assert panel.method.currentData() == "fourier"                     # the default: recognisable images
    panel.method.setCurrentIndex(panel.method.findData("ascent"))
    window.session.select(layer=None, class_index=130)                 # flamingo
    assert "class 130 (flamingo)" in panel.target_label.text()
    editors = panel.form.editors["ascent"]
    editors["steps"].setValue(40)
    editors["size"].setValue(128)
    panel.run_button.click()
    qtbot.waitUntil(lambda: len(panel.history) >= 3, timeout=60000)
    assert panel.canvas.has_image() and panel.curve.xData is not None
    panel.stop()
    stopped_at = len(panel.history)
    qtbot.wait(600)
    assert len(panel.history) <= stopped_at + 1 and panel.run_button.text() == "Continue"
    editors["steps"].setValue(60)                                       # more steps, then Continue
    panel.run_button.click()
    qtbot.waitUntil(lambda: not panel.running and len(panel.history) == 60, timeout=120000)
    assert panel.history[-1] > panel.history[0] + 10                   # from noise to a strong flamingo score
    assert "Done: 60 steps" in panel.status.text()
    out = tmp_path / "flamingo.png"
    panel.save(str(out))
    qtbot.waitUntil(lambda: out.with_suffix(".json").is_file(), timeout=30000)
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert recipe["method"] == "ascent" and recipe["target"]["class_index"] == 130
    assert recipe["settings"]["steps"] == 60 and recipe["steps_done"] == 60
    assert np.asarray(Image.open(out)).shape == (128, 128, 3)
    from cnnviewer.cli import main
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    again = tmp_path / "again.png"                                      # the recipe makes the same image
    assert main(["synthesize", "--from", str(out.with_suffix(".json")), "-o", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out)))


def test_deepdream_from_the_current_input(window, qtbot):
    panel = window.synthesis
    window.docks["synthesis"].raise_()
    panel.method.setCurrentIndex(panel.method.findData("deepdream"))
    window.session.select(layer="features.7")
    assert "all of features.7" in panel.target_label.text()
    editors = panel.form.editors["deepdream"]
    editors["octaves"].setValue(2)
    editors["steps"].setValue(3)
    panel.run_button.click()
    qtbot.waitUntil(lambda: not panel.running and len(panel.history) == 6, timeout=60000)
    assert panel.history[-1] > panel.history[0]
    image = window.session.image.pixels
    assert panel.canvas.image().shape[:2] == image.shape[:2]


def test_facets_from_the_dataset_panels_folder(window, qtbot, tmp_path, monkeypatch):
    from skimage import data
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("astronaut", "coffee"):
        photo = Image.fromarray(getattr(data, name)())
        for i in range(4):
            crop = photo.crop((10 * i, 5 * i, 10 * i + 400, 5 * i + 380))
            (crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else crop).save(folder / f"{name}_{i}.png")
    panel = window.synthesis
    panel.method.setCurrentIndex(panel.method.findData("facets"))
    window.session.select(layer="features.17", channel=5)
    panel.run_button.click()
    assert "Dataset panel first" in panel.status.text()                 # no folder indexed yet
    window.dataset.open_folder(folder)
    qtbot.waitUntil(lambda: window.dataset.index is not None, timeout=60000)
    window.docks["synthesis"].raise_()
    panel.form.editors["facets"]["steps"].setValue(5)
    for name, value in (("facets", 2), ("top", 8), ("nearest", 4)):
        panel.form.extras[name].setValue(value)
    panel.run_button.click()
    qtbot.waitUntil(lambda: not panel.running and len(panel.history) == 5, timeout=60000)
    assert panel.canvas.image().shape[:2] == (224, 448)                 # two facets side by side
    strip = panel.examples                                              # a caption above each facet's own images
    assert strip.isVisible() and [len(thumbs) for thumbs in strip.thumbs] == [4, 4]
    for facet, (caption, thumbs) in enumerate(zip(strip.captions, strip.thumbs)):
        assert caption.text().startswith(f"<b>facet {facet + 1}</b>: ")
        assert caption.mapTo(strip, caption.rect().bottomLeft()).y() <= thumbs[0].mapTo(strip, thumbs[0].rect().topLeft()).y()
        assert len({label.toolTip().split(": ")[1].split("_")[0] for label in thumbs}) == 1   # one cluster's images
        assert all(label.frameShape() == label.frameShape().Box for label in thumbs)         # white ones stay visible
    assert strip.captions[0].mapTo(strip, strip.captions[0].rect().topLeft()).x() < \
        strip.captions[1].mapTo(strip, strip.captions[1].rect().topLeft()).x()             # left to right, as the facets
    panel.run_button.setText("Run")
    panel.restart()                                                     # a new run starts its bar at 0
    assert panel.progress.value() == 0 and not strip.isVisible()
    qtbot.waitUntil(lambda: not panel.running and len(panel.history) == 5, timeout=60000)
    assert "facets left to right: " in panel.status.text() and len(panel.facet_values) == 2
    assert min(panel.facet_values) == panel.history[-1]                 # each facet's activation reached
    # The batch ran on one torch thread per facet (up to the cores); the recipe says so, and the job
    # thread is back on its one thread afterwards.
    out = tmp_path / "facets.png"
    panel.save(str(out))
    qtbot.waitUntil(lambda: out.with_suffix(".json").is_file(), timeout=30000)
    assert json.loads(out.with_suffix(".json").read_text())["torch_threads"] == min(os.cpu_count() or 1, 2)
    counts = []
    panel._jobs.submit("probe", lambda _context: __import__("torch").get_num_threads(), on_done=counts.append)
    qtbot.waitUntil(lambda: counts == [1], timeout=10000)


def test_style_transfer_with_pictures_dropped_on_the_panel(window, qtbot, tmp_path, monkeypatch):
    from skimage import data

    from tests.ui.conftest import drop_files
    panel = window.synthesis
    window.docks["synthesis"].raise_()
    panel.method.setCurrentIndex(panel.method.findData("style"))
    assert panel.style_images.isVisible() and "Style transfer" in panel.target_label.text()
    panel.run_button.click()
    assert "needs a style image" in panel.status.text() and panel.engine is None
    style_file, broken = tmp_path / "retina.png", tmp_path / "broken.png"
    Image.fromarray(data.retina()[::3, ::3]).save(style_file)
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    drop_files(panel.style_images.style.picture, [style_file])          # a drop on the Style box sets it
    qtbot.waitUntil(lambda: panel.style_images.style.pixels is not None, timeout=20000)
    assert panel.style_images.style.path == str(style_file) and window.session.image.source != str(style_file)
    drop_files(panel.style_images.style, [broken])                       # a bad file: a message, the picture stays
    qtbot.waitUntil(lambda: "Not used: broken.png" in panel.status.text(), timeout=20000)
    assert panel.style_images.style.path == str(style_file)
    editors = panel.form.editors["style"]
    editors["steps"].setValue(8)
    editors["size"].setValue(96)
    panel.run_button.click()
    qtbot.waitUntil(lambda: not panel.running and len(panel.history) == 8, timeout=60000)
    assert panel.history[-1] < 0.6 * panel.history[0]                     # the loss falls (1.5e6 and TV)
    assert "Done: 8 steps, loss" in panel.status.text()
    assert max(panel.canvas.image().shape[:2]) == 96
    editors["steps"].setValue(12)                                        # Continue keeps the L-BFGS run going
    panel.run_button.click()
    qtbot.waitUntil(lambda: not panel.running and len(panel.history) == 12, timeout=60000)
    out = tmp_path / "styled.png"
    panel.save(str(out))
    qtbot.waitUntil(lambda: out.with_suffix(".json").is_file(), timeout=30000)
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert recipe["method"] == "style" and recipe["style_image"] == str(style_file)
    assert recipe["settings"]["backbone"] == "model" and recipe["settings"]["style_weight"] == 1.5e6
    assert recipe["image"] == str(out.with_suffix(".start.png"))   # the sample photo is no file: saved beside
    from cnnviewer.cli import main
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    again = tmp_path / "again.png"
    assert main(["synthesize", "--from", str(out.with_suffix(".json")), "-o", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out)))


def test_a_class_chosen_anywhere_is_synthesis_target(window, qtbot):
    from PySide6.QtCore import Qt
    panel, gradients, session = window.synthesis, window.gradients, window.session
    session.select(layer="features.14", channel=36)                    # a channel chosen: it is the target
    assert "features.14 channel 36" in panel.target_label.text()
    gradients.class_box.lineEdit().clear()                              # Gradients: type, Enter takes the match
    qtbot.keyClicks(gradients.class_box.lineEdit(), "flamingo")
    qtbot.keyClick(gradients.class_box.lineEdit(), Qt.Key.Key_Return)
    assert session.selection.class_index == 130
    assert gradients.target_kind.currentText() == "chosen class" and gradients.target().class_index == 130
    assert "class 130 (flamingo)" in panel.target_label.text() and panel.target().class_index == 130
    assert panel.class_picker.currentText() == "130: flamingo"
    session.select(channel=12)                                          # a channel again: the channel
    assert panel.target().channel == 12
    window.predictions.choose_bar(1)                                    # a prediction bar: its class
    second = window.predictions.predictions[1].index
    assert panel.target().class_index == second and gradients.target().class_index == second
    panel.class_picker.lineEdit().clear()                               # the picker here: everywhere
    qtbot.keyClicks(panel.class_picker.lineEdit(), "goldfi")
    qtbot.keyClick(panel.class_picker.lineEdit(), Qt.Key.Key_Return)
    assert session.selection.class_index == 1 and panel.target().class_index == 1
    assert gradients.class_box.currentText() == "1: goldfish"


def test_settings_form_defaults_custom_preset_wheel_and_method_switch(window, qtbot):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication
    panel = window.synthesis
    window.docks["synthesis"].raise_()
    panel.method.setCurrentIndex(panel.method.findData("ascent"))
    form = panel.form
    assert form.preset.currentText() == "Table 1, setting 3"
    blur = form.editors["ascent"]["blur_every"]
    blur.clearFocus()
    wheel = QWheelEvent(QPointF(5, 5), QPointF(blur.mapToGlobal(QPoint(5, 5))), QPoint(0, 0), QPoint(0, -120),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(blur, wheel)                                 # scrolling over it: no change
    assert blur.value() == 4
    blur.setValue(7)                                                    # an edit: the preset box says custom
    assert form.preset.currentText() == "custom"
    assert form.settings("ascent", 224).blur_every == 7
    blur.setValue(4)
    assert form.preset.currentText() == "Table 1, setting 3"
    form.preset.setCurrentIndex(form.preset.findData(2))
    assert form.editors["ascent"]["decay"].value() == 0.3
    # A run of one method: switching shows none of its image, curve or Continue, and the form starts at the top.
    panel.method.setCurrentIndex(panel.method.findData("fourier"))
    window.session.select(layer=None, class_index=130)
    form.editors["fourier"]["steps"].setValue(4)
    form.editors["fourier"]["size"].setValue(96)
    panel.run_button.click()
    qtbot.waitUntil(lambda: not panel.running and len(panel.history) == 4, timeout=60000)
    assert panel.canvas.has_image() and panel.run_button.text() == "Continue"
    panel.scroller.verticalScrollBar().setValue(panel.scroller.verticalScrollBar().maximum())
    panel.method.setCurrentIndex(panel.method.findData("deepdream"))
    assert not panel.canvas.has_image() and panel.history == [] and panel.run_button.text() == "Run"
    assert not panel.restart_button.isEnabled() and panel.progress.value() == 0
    assert panel.scroller.verticalScrollBar().value() == 0


def test_style_status_follows_the_style_picture_and_save_name(window, qtbot, tmp_path):
    from skimage import data

    from cnnviewer.engine.attribution.target import Target
    from cnnviewer.ui.panels.synthesis.saving import file_name, save_folder
    panel = window.synthesis
    panel.method.setCurrentIndex(panel.method.findData("style"))
    qtbot.waitUntil(lambda: "No VGG weights on disk: using the current model's layers" in panel.target_label.text(),
                    timeout=20000)                                      # which backbone, and why
    panel.run_button.click()
    assert panel.status.text().endswith("or Choose…")                  # no double period
    style_file = tmp_path / "brick.png"
    Image.fromarray(data.brick()).convert("RGB").save(style_file)
    panel.style_images.style.load(style_file)
    qtbot.waitUntil(lambda: panel.style_images.style.pixels is not None, timeout=20000)
    assert "needs a style image" not in panel.status.text()
    label = window.session.model.label
    assert file_name("fourier", Target(class_index=130), label) == "fourier-class130-flamingo.png"
    assert file_name("ascent", Target(layer="features.14", channel=36), label) == "ascent-features.14-ch36.png"
    assert window.dataset.index is None or save_folder() != window.dataset.index.folder


def test_many_facets_scroll_instead_of_widening_the_dock_column(qtbot):
    """At 1280x800 a 4-facet run's clusters took the right column from ~705 px and squeezed
    Input & predictions to ~355 px: the strip scrolls sideways now, its minimum width stays small."""
    import numpy as np

    from cnnviewer.ui.panels.synthesis.facet_strip import FacetStrip
    strip = FacetStrip()
    qtbot.addWidget(strip)
    strip.resize(300, 200)
    strip.show()
    empty = strip.minimumSizeHint().width()
    picture = np.full((64, 64, 3), 128, np.uint8)
    strip.show_facets([(k, [picture] * 4, [f"{k}-{i}.jpg" for i in range(4)]) for k in range(6)])
    assert strip.isVisible() and len(strip.captions) == 6
    assert strip.minimumSizeHint().width() <= max(empty, 120)
    assert strip.widget().sizeHint().width() > 300 and strip.horizontalScrollBar().maximum() > 0
    assert strip.height() >= strip.widget().sizeHint().height()   # the thumbnails are not cut off


def test_a_synthesis_panel_on_screen_before_the_model_ran_names_the_real_top_1(qtbot, settings):
    """Seen under Xvfb: Synthesis in front at launch (a restored layout) said "class 0 (tench) (the
    top-1)" for the cat, because the first forward pass came after the panel was built."""
    from tests.ui.conftest import make_window
    window = make_window(qtbot, settings)
    window.docks["synthesis"].raise_()
    panel = window.synthesis                    # built before any model or forward pass
    window.controller.load_model("mobilenet_v2")
    window.controller.open_sample("chelsea")
    qtbot.waitUntil(lambda: window.session.forward is not None, timeout=30000)
    top = window.session.forward.predictions[0]
    assert f"class {top.index} ({top.label})" in panel.target_label.text() and "the top-1" in panel.target_label.text()
    window.jobs.runner.close()
