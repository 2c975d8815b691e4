"""The Input panel's class map (issue 25): the real MobileNetV2 made fully convolutional on a cat
beside coffee; its overlay, legend, hover, and the region a click, a drag or a legend class makes the
target; the toggle's refusal; nothing stale when the image changes."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent
from PySide6.QtWidgets import QApplication
from PySide6.QtTest import QTest
from skimage import data

from cnnviewer.engine.media.images import InputImage

CATS = {281, 282, 283, 284, 285}          # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}                  # espresso, cup, coffee mug


def cat_and_coffee() -> InputImage:
    both = Image.new("RGB", (600, 300))
    both.paste(Image.fromarray(data.chelsea()).resize((300, 300)), (0, 0))
    both.paste(Image.fromarray(data.coffee()).resize((300, 300)), (300, 0))
    return InputImage(np.ascontiguousarray(np.asarray(both)), "cat-and-coffee", (600, 300))


def drawn(widget) -> np.ndarray:
    """What the widget shows on screen, (H, W, 3) uint8."""
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    array = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return array[:, :image.width() * 3].reshape(image.height(), image.width(), 3).copy()


def on_screen(canvas, y: float, x: float):
    """The viewport point of photo pixel (y, x)."""
    return canvas.mapFromScene(canvas.view.mapViewToScene(QPointF(x, y)))


def test_class_map_legend_hover_and_regions(window, qtbot):
    panel, session, controls = window.predictions, window.session, window.predictions.class_map
    window.docks["predictions"].raise_()
    assert controls.fully_convolutional.isVisible() and not controls.isVisible()   # a classifier: no map
    image = cat_and_coffee()
    session.set_image(image)
    controls.fully_convolutional.click()                        # the Input panel's checkbox
    qtbot.waitUntil(lambda: controls.view is not None and controls.view.image is image, timeout=60000)
    assert session.model.name == "mobilenet_v2 (fully convolutional)" and window.fully_convolutional_action.isChecked()
    assert controls.isVisible() and panel.canvas.has_overlay()
    view = controls.view
    legend = [entry.class_index for entry in view.legend]
    assert set(legend[:4]) & CATS and set(legend[:4]) & COFFEE, [e.name for e in view.legend[:6]]
    assert [e.area for e in view.legend] == sorted((e.area for e in view.legend), reverse=True)
    assert controls.legend.item(1).text().startswith(view.legend[0].name)
    qtbot.wait(300)          # the photo fitted to the resized dock
    # Opacity changes what is drawn, with no new map.
    controls.opacity.setValue(10)
    faint = drawn(panel.canvas)
    controls.opacity.setValue(90)
    strong = drawn(panel.canvas)
    assert np.abs(faint.astype(int) - strong.astype(int)).mean() > 3 and controls.view is view
    # Hover reads the class and its probability at that pixel (the photo's middle row, a quarter in).
    height, width = panel.canvas.image().shape[:2]
    spot = on_screen(panel.canvas, height / 2, width * 0.3)
    viewport = panel.canvas.viewport()
    for nudge in (1, 0):      # a move event as the mouse makes it (QTest.mouseMove does nothing when Qt's
        qtbot.wait(60)        # cursor is already there, and pyqtgraph drops moves within ~17 ms of another)
        point = QPointF(spot + QPoint(nudge, 0))
        QApplication.sendEvent(viewport, QMouseEvent(QEvent.Type.MouseMove, point, viewport.mapToGlobal(point),
                                                     Qt.MouseButton.NoButton, Qt.MouseButton.NoButton,
                                                     Qt.KeyboardModifier.NoModifier))
    qtbot.waitUntil(lambda: "at this pixel" in controls.readout.text(), timeout=2000)
    under = panel.canvas.view.mapSceneToView(panel.canvas.mapToScene(spot))   # the photo pixel, as rounded on screen
    found = view.at(under.y() / height, (under.x() / width - 0.25) / 0.5)     # the crop is the middle half
    assert controls.readout.text() == f"{dict((e.class_index, e.name) for e in view.legend)[found[0]]}: " \
                                       f"{found[1]:.1%} at this pixel"
    # A legend click: only that class is coloured, and it is the target over the whole map.
    coffee = next(e.class_index for e in view.legend if e.class_index in COFFEE)
    item = controls.legend.item(controls.legend.row_of(coffee))
    qtbot.mouseClick(controls.legend.viewport(), Qt.MouseButton.LeftButton,
                     pos=controls.legend.visualItemRect(item).center())
    assert session.selection.class_index == coffee and session.selection.region is None
    alpha = panel.canvas.overlay_item.image[..., 3]
    np.testing.assert_array_equal(alpha > 0, view.labels == coffee)
    start = time.perf_counter()
    controls.show_only(None)
    redraw_ms = (time.perf_counter() - start) * 1000
    assert redraw_ms < 50, redraw_ms           # 448×448: colours cached, only alpha recomputed
    assert (panel.canvas.overlay_item.image[..., 3] == 255).all()
    # A click on the photo: that output pixel's class over that one output position (a 14 × 14 map).
    QTest.mouseClick(panel.canvas.viewport(), Qt.MouseButton.LeftButton,
                     pos=on_screen(panel.canvas, height * 0.5, width * 0.3))
    qtbot.waitUntil(lambda: session.selection.region is not None, timeout=2000)
    cls, cell = view.output_cell(0.5, 0.1)
    assert session.selection.class_index == cls
    assert np.allclose(session.selection.region, cell) and np.isclose(cell[2] - cell[0], 1 / 14)
    assert controls.region_item.isVisible() and controls.whole.isEnabled()
    # Whole image clears the region, keeping the class.
    controls.whole.click()
    assert session.selection.region is None and session.selection.class_index == cls
    assert not controls.region_item.isVisible()
    # A drag over the cat (the left half of the crop) makes that box the region, its commonest class the class.
    viewport = panel.canvas.viewport()
    a, b = on_screen(panel.canvas, height * 0.2, width * 0.3), on_screen(panel.canvas, height * 0.8, width * 0.45)
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, pos=a)
    for step in range(1, 6):               # moves with the button held (QTest.mouseMove carries none)
        qtbot.wait(40)      # pyqtgraph drops moves closer than its rate limit (~17 ms): all five went, a click
        point = QPointF(a + (b - a) * step / 5)
        QApplication.sendEvent(viewport, QMouseEvent(QEvent.Type.MouseMove, point, viewport.mapToGlobal(point),
                                                     Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton,
                                                     Qt.KeyboardModifier.NoModifier))
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=b)
    qtbot.waitUntil(lambda: session.selection.region is not None, timeout=2000)
    y0, x0, y1, x1 = session.selection.region
    assert np.allclose([y0, x0, y1, x1], [0.2, 0.1, 0.8, 0.4], atol=0.03), session.selection.region
    assert session.selection.class_index == view.box_class(session.selection.region)
    assert session.selection.class_index in CATS
    window.activateWindow()
    panel.canvas.setFocus()
    qtbot.waitUntil(lambda: panel.canvas.hasFocus(), timeout=2000)
    QTest.keyClick(panel.canvas, Qt.Key.Key_Escape)           # Esc: the whole map again
    assert session.selection.region is None
    # A new image: the old overlay goes at once, before the new map arrives.
    chelsea = InputImage(np.ascontiguousarray(data.chelsea()), "chelsea", (451, 300))
    session.set_image(chelsea)
    assert controls.view is None and not panel.canvas.has_overlay() and not controls.isVisible()
    qtbot.waitUntil(lambda: controls.view is not None, timeout=60000)
    assert controls.view.image is chelsea and controls.view.legend[0].class_index in CATS
    # Unticked from the menu: the classifier again, same image, no map.
    window.fully_convolutional_action.trigger()
    assert session.model.name == "mobilenet_v2" and session.image is chelsea
    assert not controls.fully_convolutional.isChecked() and controls.view is None
    qtbot.waitUntil(lambda: window.predictions.predictions != (), timeout=30000)
    assert not controls.isVisible() and not panel.canvas.has_overlay()


def test_toggle_refuses_a_vgg_and_another_model_unticks_it(window, qtbot, tmp_path):
    """VGG11 with random weights (no weights offline; untrained): its head reads a fixed 7×7 grid."""
    messages: list[str] = []
    window.controller.message.connect(messages.append)
    action, controls = window.fully_convolutional_action, window.predictions.class_map
    window.controller.load_model("vgg11", allow_download=False)
    qtbot.waitUntil(lambda: window.session.model is not None and window.session.model.name == "vgg11", timeout=60000)
    vgg = window.session.model
    action.trigger()
    qtbot.waitUntil(lambda: any(m.startswith("Not fully convolutional") for m in messages), timeout=30000)
    refusal = next(m for m in messages if m.startswith("Not fully convolutional"))
    assert "linear layer" in refusal and "\n" not in refusal
    assert window.session.model is vgg and not action.isChecked() and not controls.fully_convolutional.isChecked()
    window.controller.load_model("mobilenet_v2")
    qtbot.waitUntil(lambda: window.session.model.name == "mobilenet_v2", timeout=60000)
    # Knock-outs on the classifier are cleared when switching, and the status line says so.
    from cnnviewer.engine.experiments.ablate_spec import Knockout
    window.controller.add_knockout(Knockout("features.3", (0, 1)))
    qtbot.waitUntil(lambda: len(window.session.interventions) == 1, timeout=30000)
    action.trigger()
    qtbot.waitUntil(lambda: window.session.model.name.endswith("(fully convolutional)"), timeout=60000)
    assert controls.fully_convolutional.isChecked() and window.session.interventions == ()
    assert messages[-1].endswith("1 knock-out cleared") and not window.intervention_strip.isVisible()
    # Weights go into the classifier (not the class-map net), and the toggle unticks.
    import torch
    import torchvision
    torch.manual_seed(0)
    weights = tmp_path / "mnv2.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights)
    window.load_weights(weights)
    qtbot.waitUntil(lambda: window.session.model.weights_path == str(weights), timeout=60000)
    assert window.session.model.name == "mobilenet_v2" and not window.controller.fully_convolutional.on
    assert not action.isChecked() and not controls.fully_convolutional.isChecked()
    action.trigger()
    qtbot.waitUntil(lambda: window.session.model.name.endswith("(fully convolutional)"), timeout=60000)
    window.controller.load_model("resnet18", allow_download=False)   # random weights: only its loading matters
    qtbot.waitUntil(lambda: window.session.model.name == "resnet18", timeout=60000)
    assert not action.isChecked() and not controls.fully_convolutional.isChecked()
    assert not window.controller.fully_convolutional.on


def test_a_random_class_map_net_in_the_panel_alone_and_a_cancelled_map_never_arrives(qtbot):
    """The Input panel on its own (Session, UiJobs, Controller) with a small random class-map network
    (untrained): 3 classes at a quarter of the input's size; a map whose job was cancelled never shows."""
    import torch
    from torch import nn

    from cnnviewer.engine.jobs import JobRunner
    from cnnviewer.engine.models.handle import wrap_module
    from cnnviewer.engine.session import Session
    from cnnviewer.ui.controller import Controller
    from cnnviewer.ui.jobs import UiJobs
    from cnnviewer.ui.panels.predictions import PredictionsPanel

    torch.manual_seed(0)
    session, jobs = Session(), UiJobs(JobRunner(torch_threads=1))
    controller = Controller(session, jobs)
    panel = PredictionsPanel(session)
    panel.attach(jobs, controller.workbench, controller.fully_convolutional)
    qtbot.addWidget(panel)
    panel.resize(500, 600)
    panel.show()
    try:
        session.set_image(InputImage(np.ascontiguousarray(data.astronaut()[::4, ::4]), "astronaut", (128, 128)))
        session.set_model(wrap_module(nn.Sequential(nn.Conv2d(3, 3, 4, stride=4)).eval(), "tiny"))
        controls = panel.class_map
        qtbot.waitUntil(lambda: controls.view is not None, timeout=30000)
        assert controls.view.grid == (56, 56) and len(controls.view.colours) == 3
        assert controls.legend.count() == 1 + len(controls.view.legend) and panel.lower.currentIndex() == 1
        assert panel.canvas.has_overlay() and controls.fully_convolutional.isVisible()
        # Another image: its map's job is cancelled as soon as it starts; nothing arrives afterwards.
        session.set_image(InputImage(np.ascontiguousarray(data.coffee()[::4, ::4]), "coffee", (150, 100)))
        assert controls.view is None and not panel.canvas.has_overlay()
        qtbot.waitUntil(lambda: session.forward is not None, timeout=30000)
        controls.reset()                                      # cancels the class-map job just submitted
        qtbot.wait(1500)
        assert controls.view is None and not panel.canvas.has_overlay() and panel.lower.currentIndex() == 0
    finally:
        jobs.runner.close()


def test_unticking_while_the_switch_builds_keeps_the_classifier(window, qtbot):
    """Tick then untick at once: the switch that was building is dropped when it arrives (it used to
    switch anyway and leave the box ticked)."""
    toggle, action = window.controller.fully_convolutional, window.fully_convolutional_action
    qtbot.waitUntil(lambda: window.session.model is not None and window.session.forward is not None, timeout=60000)
    classifier = window.session.model
    toggle.set_on(True)
    toggle.set_on(False)
    with qtbot.waitSignal(toggle.changed, timeout=60000):   # the built switch arrives and is dropped
        pass
    qtbot.wait(200)
    assert window.session.model is classifier and not toggle.on
    assert not action.isChecked() and not window.predictions.class_map.fully_convolutional.isChecked()
