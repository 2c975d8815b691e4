"""The live detection panel: image folders, video with a two-stage detector, camera frames."""


from __future__ import annotations

import numpy as np
from PIL import Image
from skimage import data


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
    where = f"Saved {saved.name} and {saved.stem}.json in {tmp_path}"     # where they went (trial row 33)
    assert where in panel.message.text() and where in window.statusBar().currentMessage()
    assert [text for _at, text in window.messages.entries].count(window.statusBar().currentMessage()) == 1
    assert window.session.image.name == saved.name                   # the frame is every panel's input

    face = max(panel.shown, key=lambda d: d.score)                   # click a face: the panels explain it
    panel.canvas.clicked.emit((face.box[1] + face.box[3]) / 2, (face.box[0] + face.box[2]) / 2)
    assert panel.selected is face
    qtbot.waitUntil(lambda: window.session.model.name.startswith("mtcnn →"), timeout=60000)
    assert window.session.selection.class_index == 0
    qtbot.waitUntil(lambda: bool(window.predictions.predictions)
                    and window.predictions.predictions[0].label.endswith("this detection"), timeout=60000)
    assert window.predictions.predictions[0].probability > 0.9       # its score, re-computed
    title = window.predictions.title.text()
    assert title.count(" at (") == 1, title                           # the box is named once (row 27)
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

    again = panel.capture(tmp_path)                                  # capture while explaining that face
    qtbot.waitUntil(lambda: window.session.image.name == again.name, timeout=60000)
    assert window.session.model.name.startswith("mtcnn →")          # still that detection, on this frame
    qtbot.waitUntil(lambda: bool(window.predictions.predictions)
                    and window.predictions.predictions[0].label.endswith("this detection"), timeout=60000)
    assert window.predictions.predictions[0].probability > 0.9       # the same face, consistently scored

    assert "Load a model to go back" in panel.message.text()
    window.controller.load_model("mobilenet_v2")                     # back to a classifier: top-1 again
    qtbot.waitUntil(lambda: window.session.model.name == "mobilenet_v2", timeout=60000)
    assert gradients.target_kind.currentText() == "top-1 class" and window.session.selection.class_index is None
    assert "Load a model to go back" not in panel.message.text()     # the note went with the explanation


def test_playback_position_replay_and_loop(window, qtbot, astronaut_clip):
    panel = window.live_detection
    window.docks["live_detection"].raise_()
    assert panel.score.label.text() == "0.90" and panel.detector.view().minimumWidth() > 200   # value shown
    assert panel.open_file(astronaut_clip.video, realtime=False)
    assert panel.playback.isVisibleTo(panel) and panel.playback.position.maximum() == 11
    qtbot.waitUntil(lambda: "End of the source" in panel.message.text(), timeout=60000)
    qtbot.waitUntil(lambda: panel.frame is not None and panel.frame.index == 11, timeout=30000)
    assert panel.playback.label.text() == "frame 12 / 12"
    panel.toggle_pause()
    panel.playback.position.setValue(4)                              # drag the position: that frame, paused
    qtbot.waitUntil(lambda: panel.frame.index == 4, timeout=30000)
    assert panel.frame.name.endswith("#4") and len(panel.shown) == 1  # one face before frame 6
    panel.playback.loop.setChecked(True)
    panel.toggle_pause()
    qtbot.waitUntil(lambda: panel.frame.index == 11, timeout=60000)
    qtbot.waitUntil(lambda: panel.frame.index < 11, timeout=60000)     # round again, never ended
    panel.playback.loop.setChecked(False)
    panel.playback.replay_button.click()
    qtbot.waitUntil(lambda: panel.frame.index <= 2, timeout=30000)


def test_live_detection_video_with_a_two_stage_detector(window, qtbot, astronaut_clip):
    """Random-initialised Faster R-CNN (no COCO weights offline) through the whole pipeline."""
    panel = window.live_detection
    window.docks["live_detection"].raise_()
    panel.detector.setCurrentText("fasterrcnn_mobilenet_v3_large_320_fpn")
    panel.playback.loop.setChecked(True)   # the 12 frames may all be read before the pause below: step must find one
    assert panel.open_file(astronaut_clip.video, realtime=False)   # lossless: frames are left to step through
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
    panel.step()     # one more frame while paused, even if the job thread's fx trace broke its run (test_live_traces.py)

    def moved_on() -> None:                                          # the next frame, or frame 0 again
        assert panel.frame.index != shown_index, panel.message.text()   # else: what the panel said
    qtbot.waitUntil(moved_on, timeout=30000)


def test_camera_frames_reach_the_detector(window, qtbot):
    """The camera path without a camera: Qt video frames as the sink delivers them."""
    from PySide6.QtGui import QImage
    from PySide6.QtMultimedia import QVideoFrame

    panel = window.live_detection
    photo = np.ascontiguousarray(data.astronaut())
    image = QImage(photo.data, 512, 512, 512 * 3, QImage.Format.Format_RGB888).convertToFormat(
        QImage.Format.Format_ARGB32)                                # cameras deliver 32-bit frames
    panel.camera.take_frame(QVideoFrame(image))
    qtbot.waitUntil(lambda: panel.frame is not None and panel.frame.name == "camera", timeout=60000)
    assert np.array_equal(panel.frame.pixels, photo)                # colours and layout kept
    assert len(panel.shown) == 1 and panel.shown[0].label == "face"


def test_dropping_a_video_or_a_folder_on_the_panel_plays_it(window, qtbot, astronaut_clip):
    from tests.ui.conftest import drop_files

    panel = window.live_detection
    image = window.session.image
    drop_files(window.predictions, [astronaut_clip.video])          # a video anywhere: Live detection plays it
    from cnnviewer.ui.widgets.controls import on_screen
    assert on_screen(panel)                                          # its tab brought to the front
    qtbot.waitUntil(lambda: panel.frame is not None and "#" in panel.frame.name, timeout=60000)
    drop_files(panel.canvas.viewport(), [astronaut_clip.folder])      # a folder on the panel: its source
    qtbot.waitUntil(lambda: panel.frame is not None and panel.frame.name.endswith(".png"), timeout=60000)
    assert window.session.image is image                              # not taken as the input image


def test_the_detector_list_marks_which_detectors_have_weights(qtbot, settings):
    """Trial row 37: "✓ weights" / "untrained" in the open list; the item texts stay the detector names."""
    from tests.ui.conftest import make_window

    from cnnviewer.ui.panels.detector_marks import HAS_WEIGHTS, MARK_ROLE, UNTRAINED
    window = make_window(qtbot, settings)
    combo = window.live_detection.detector
    qtbot.waitUntil(lambda: combo.itemData(0, MARK_ROLE) is not None, timeout=30000)
    marks = {combo.itemText(i): combo.itemData(i, MARK_ROLE) for i in range(combo.count())}
    assert marks["mtcnn"] == HAS_WEIGHTS                        # shipped offline
    assert marks["fasterrcnn_resnet50_fpn"] == UNTRAINED        # no COCO file in the tests' private hub cache
    assert combo.currentText() == "mtcnn"
    from PySide6.QtWidgets import QStyleOptionViewItem
    option = QStyleOptionViewItem()
    combo.itemDelegate().initStyleOption(option, combo.model().index(0, 0))
    assert option.text == f"mtcnn   {HAS_WEIGHTS}"
    window.jobs.runner.close()
