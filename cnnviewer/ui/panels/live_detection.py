"""Live detection and segmentation: camera, video file or image folder, detections or a class map
drawn on every frame (the segmentation task's controls and drawing: live_segmentation.py).

The engine's `LivePipeline` reads files and runs the detector on its own
threads, always on the newest frame; cameras push frames from Qt Multimedia's
video sink. Results reach this (GUI) thread latest-wins, where the user's score
and IoU thresholds are applied, so moving a slider redraws at once without a
model run. Latency is measured from each frame's capture time to its overlay.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.detection.overlay import default_score
from cnnviewer.engine.session import Session
from cnnviewer.ui import file_dialogs
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.main_thread import Dispatcher
from cnnviewer.ui.panels import live_segmentation
from cnnviewer.ui.panels.detector_marks import mark_detectors
from cnnviewer.ui.panels.live_names import DETECTORS, TOOLTIPS, VIEWS
from cnnviewer.ui.panels.live_segmentation import TASKS, SegmentationControls
from cnnviewer.ui.widgets.camera_feed import CameraFeed, cameras
from cnnviewer.ui.widgets.controls import fit_names, labelled_row
from cnnviewer.ui.widgets.image_canvas import ImageCanvas
from cnnviewer.ui.widgets.playback import PlaybackBar, ValueSlider

class LiveDetectionPanel(QWidget):
    """Detections (score / IoU thresholds, NMS and RPN views) or a class map (opacity, legend) over live
    frames, with pause, step and capture."""

    frame_shown = Signal()   # after each new frame's overlay is on screen

    def __init__(self, session: Session, jobs: UiJobs, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self._pipeline = None            # created on first use (imports torch)
        self._incoming = None            # newest result not yet shown (set on the detector thread)
        self._incoming_lock = threading.Lock()
        self.result = None               # LiveResult last shown
        self.frame = None                # its Frame
        self.raw: list = []
        self.shown: list = []
        self.paused = False
        self.latencies: list[float] = []
        self._shown_times: list[float] = []
        self._anchor_point: tuple[float, float] | None = None
        self.selected = None             # the Detection clicked
        self._explanation = None         # the model that explains it, once shown
        self._notes: list[str] = []      # the last messages shown under the picture
        self.task = QComboBox()
        self.task.addItems(TASKS)
        self.segmentation = SegmentationControls(self)
        self.source = QComboBox()
        self.source.addItem("Choose a source…")
        self.resolution = QComboBox()
        self.resolution.setToolTip("Camera resolution")
        self.resolution.setVisible(False)
        self.detector = QComboBox()
        self.detector.addItems(DETECTORS)
        self.weights_button = QPushButton("Weights…")
        self.weights_button.setToolTip("Custom weights for the chosen torchvision detector")
        self._weights: str | None = None
        self.score = ValueSlider(default_score(DETECTORS[0]))
        self.iou = ValueSlider(0.5)
        self.view = QComboBox()
        self.view.addItems(VIEWS)
        self.pause_button = QPushButton("Pause")
        self.step_button = QPushButton("Step")
        self.capture_button = QPushButton("Capture (Space)")
        for combo, length in ((self.source, 12), (self.detector, 22), (self.view, 22)):   # view: whole
            fit_names(combo, length)
        mark_detectors(self.detector, jobs)   # "✓ weights" / "untrained" in the open list
        self.canvas = ImageCanvas(self)
        self.playback = PlaybackBar(self)
        self.playback.seek_requested.connect(self.seek)
        self.playback.loop_toggled.connect(lambda on: setattr(self.pipeline, "loop", on))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.model_label = QLabel("Detector")
        self.thresholds, self.view_row = QWidget(), QWidget()   # the detection task's controls
        row1 = labelled_row([("Task", self.task), ("Source", self.source), ("", self.resolution),
                             ("", self.model_label), ("", self.detector), ("", self.segmentation.model),
                             ("", self.weights_button)])
        self.thresholds.setLayout(labelled_row([("Score ≥", self.score), ("NMS IoU", self.iou)]))
        self.view_row.setLayout(labelled_row([("View", self.view)]))   # the row with room for its whole text
        row3 = labelled_row([("", self.pause_button), ("", self.step_button), ("", self.capture_button),
                             ("", self.view_row)])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(row1)
        for widget in (self.thresholds, self.segmentation, self.view_row):
            widget.layout().setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.thresholds)
        layout.addWidget(self.segmentation)
        layout.addLayout(row3)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.segmentation.legend)
        layout.addWidget(self.playback)
        layout.addWidget(self.status)
        layout.addWidget(self.message)
        dispatcher = Dispatcher.shared()
        self._show_soon = dispatcher.wrap(self._show_latest)
        self._say_soon = dispatcher.wrap(self._say)
        self._ended_soon = dispatcher.wrap(self._on_end)
        self._status_soon = dispatcher.wrap(self.note)
        self.camera = CameraFeed(self.resolution, self._on_camera_frame, self.note, self)
        self.source.activated.connect(self._on_source_chosen)
        self.resolution.activated.connect(lambda _i: self.camera.reopen())
        self.detector.currentTextChanged.connect(self._on_detector_chosen)
        self.task.currentIndexChanged.connect(self._on_task_chosen)
        self.segmentation.model.currentTextChanged.connect(self._on_segmenter_chosen)
        self.segmentation.opacity.valueChanged.connect(lambda _v: self.redraw())
        self._on_task_chosen(0)
        self.weights_button.clicked.connect(self._on_weights_clicked)
        for slider in (self.score, self.iou):
            slider.valueChanged.connect(lambda _v: self.redraw())
        for widget, tip in TOOLTIPS.items():
            getattr(self, widget).setToolTip(tip)
        session.model_changed.connect(self._on_model_changed)
        self.view.currentIndexChanged.connect(lambda _i: self.redraw())
        self.canvas.clicked.connect(self._on_canvas_clicked)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.step_button.clicked.connect(self.step)
        self.capture_button.clicked.connect(self._on_capture_clicked)
        self.capture_button.setShortcut(Qt.Key.Key_Space)
        self._list_sources()

    # ---------------------------------------------------------------- pipeline glue
    @property
    def pipeline(self):
        """The engine pipeline (its threads), created on first use."""
        if self._pipeline is None:
            from cnnviewer.engine.detection.live import LivePipeline
            self._pipeline = LivePipeline(self._result_arrived, on_error=self._say_soon, on_end=self._ended_soon,
                                          on_status=self._status_soon)
            self._pipeline.set_detector(self.model_name(), self._weights)
        return self._pipeline

    @property
    def segmenting(self) -> bool:
        """Whether the segmentation task is chosen."""
        return self.task.currentIndex() == 1

    def model_name(self) -> str:
        """The chosen task's model: the detector, or the segmentation model."""
        return self.segmentation.model.currentText() if self.segmenting else self.detector.currentText()

    def _result_arrived(self, result) -> None:
        """Detector thread: keep only the newest result; ask the GUI thread once to show it."""
        with self._incoming_lock:
            first, self._incoming = self._incoming is None, result
        if first:
            self._show_soon()

    def _show_latest(self) -> None:
        with self._incoming_lock:
            result, self._incoming = self._incoming, None
        if result is None:
            return
        self.result, self.frame, self.raw = result, result.frame, result.raw
        if result.frame.name != "camera":
            self.playback.show_position(result.frame.index)
        if self.selected is not None and self.selected not in self.raw:
            self.selected = None
        self.redraw()
        now = time.perf_counter()
        self.latencies = (self.latencies + [(now - result.frame.captured) * 1000])[-30:]
        self._shown_times = [t for t in self._shown_times if t > now - 2] + [now]
        self._update_status()
        self.frame_shown.emit()

    def note(self, text: str) -> None:
        """Show a message under the picture; the last three stay, newest last."""
        if text and text not in self._notes[-1:]:
            self._notes = (self._notes + [text])[-3:]
            self.message.setText("\n".join(self._notes))

    def _say(self, message: str) -> None:
        self.note(f"{message}. The last frame and detections stay.")

    def _on_end(self) -> None:
        self.note("End of the source: press Replay (or tick Loop).")

    def _on_model_changed(self, model) -> None:
        """Back from explaining a detection: its 'load a model to go back' note goes too."""
        if self._explanation is not None and model is not self._explanation:
            self._explanation = None
            self._notes = [n for n in self._notes if "Load a model to go back" not in n]
            self.message.setText("\n".join(self._notes))

    def shutdown(self) -> None:
        """Stop the camera and the pipeline's threads (the window is closing)."""
        self.camera.stop()
        if self._pipeline is not None:
            self._pipeline.close()

    # ---------------------------------------------------------------- sources
    def _list_sources(self) -> None:
        found = cameras()
        for camera in found:
            self.source.addItem(f"Camera: {camera.description()}", camera)
        self.source.addItem("Video file…", "video")
        self.source.addItem("Folder of images…", "folder")
        if not found:
            self.note("No camera found. Open a video file or a folder of images as the source.")

    def _on_source_chosen(self, index: int) -> None:
        kind = self.source.itemData(index)
        if kind == "video":
            path = file_dialogs.open_file(self, "Video file",
                                          "Video (*.mp4 *.avi *.mov *.mkv *.webm *.m4v *.gif);;All files (*)")
            if path:
                self.open_file(path)
        elif kind == "folder":
            path = file_dialogs.existing_folder(self, "Folder of images")
            if path:
                self.open_file(path)
        elif kind is not None:
            self.open_camera(kind)

    def open_file(self, path: str | Path, realtime: bool = True) -> bool:
        """Play a video file, an image, or a folder of images; False (and a message) if unreadable."""
        from cnnviewer.engine.errors import CnnViewerError
        from cnnviewer.engine.media.sources import open_source
        try:
            source = open_source(path)
        except CnnViewerError as error:
            self.note(f"{error}. The previous source and frame stay.")
            return False
        self.camera.stop()
        self.pipeline.play(source, realtime=realtime)
        self.playback.set_length(source.length)
        self.note(f"Playing {source.name} at {source.fps:.0f} frames/s.")
        return True

    def seek(self, index: int) -> None:
        """Jump to frame `index` of the file source (detected at once, also when paused)."""
        if self._pipeline is not None:
            self._pipeline.seek(index)

    def open_camera(self, device) -> None:
        """Stream a camera (at the chosen resolution) into the pipeline."""
        if self._pipeline is not None:
            self._pipeline.stop_source()
        self.playback.set_length(None)
        self.camera.open(device)

    def _on_camera_frame(self, pixels: np.ndarray, captured: float) -> None:
        from cnnviewer.engine.media.sources import Frame
        self.pipeline.offer(Frame(self.camera.frames, "camera", pixels, captured))

    # ---------------------------------------------------------------- task and model
    def _on_task_chosen(self, _index: int) -> None:
        """Show the chosen task's controls; its model runs on the frame on screen (e.g. while paused)."""
        segmenting = self.segmenting
        for widget in (self.detector, self.weights_button, self.thresholds, self.view_row):
            widget.setVisible(not segmenting)
        for widget in (self.segmentation, self.segmentation.model, self.segmentation.legend):
            widget.setVisible(segmenting)
        self.model_label.setText("Model" if segmenting else "Detector")
        self.selected = None
        if self._pipeline is not None:
            self._pipeline.set_detector(self.model_name(), None if segmenting else self._weights)
            self._redetect()

    def _on_segmenter_chosen(self, name: str) -> None:
        if self._pipeline is not None and self.segmenting:
            self._pipeline.set_detector(name, None)
            self._redetect()

    def _on_detector_chosen(self, name: str) -> None:
        self.score.setValue(default_score(name))
        self.score.setToolTip(f"Boxes scoring at least this are shown ({name}'s default: {default_score(name):.2f})")
        self._weights = None
        self.weights_button.setText("Weights…")
        if self._pipeline is not None and not self.segmenting:
            self._pipeline.set_detector(name, None)
            self._redetect()

    def _on_weights_clicked(self) -> None:
        path = file_dialogs.open_file(self, f"Weights for {self.detector.currentText()}",
                                      "Weights (*.pth *.pt *.bin *.ckpt *.safetensors);;All files (*)")
        if path:
            self.use_weights(path)

    def use_weights(self, path: str | None) -> None:
        """Custom weights for the chosen detector (checked on the detector thread)."""
        self._weights = path
        self.weights_button.setText(Path(path).name if path else "Weights…")
        self.pipeline.set_detector(self.detector.currentText(), path)
        self._redetect()

    def _redetect(self) -> None:
        """Run the (new) detector on the frame on screen, e.g. while paused."""
        if self.frame is not None:
            from cnnviewer.engine.media.sources import Frame
            self.pipeline.offer(Frame(self.frame.index, self.frame.name, self.frame.pixels, time.perf_counter()))

    # ---------------------------------------------------------------- drawing
    def redraw(self) -> None:
        """Thresholds and NMS on the last frame's raw detections (no model run), then draw."""
        if self.frame is None:
            return
        if self.result.segmentation is not None:
            live_segmentation.redraw(self)
            self._update_status()
            return
        from cnnviewer.engine.detection.scene import compose
        scene = compose(self.frame.pixels, self.raw, self.score.value(), self.iou.value(), self.view.currentIndex(),
                        internals=self.result.internals if self.result is not None else None,
                        anchor_point=self._anchor_point, selected=self.selected)
        self.shown = scene.shown
        if scene.note:
            self.note(f"{self.detector.currentText()}: {scene.note}.")
        self.canvas.show_image(scene.picture, keep_view=True)
        self._update_status()

    def _update_status(self) -> None:
        if self.result is None:
            return
        from cnnviewer.engine.detection.scene import status_line
        seconds = self._shown_times[-1] - self._shown_times[0] if len(self._shown_times) > 1 else 0.0
        fps = (len(self._shown_times) - 1) / seconds if seconds > 0 else 0.0
        latency = float(np.median(self.latencies)) if self.latencies else None
        if self.result.segmentation is not None:
            self.status.setText(live_segmentation.status(self, fps, latency))
            return
        self.status.setText(status_line(self.result, self.shown, self.score.value(), self.view.currentIndex(),
                                        fps, latency, self._anchor_point is not None))

    def _on_canvas_clicked(self, row: float, column: float) -> None:
        if self.frame is None:
            return
        if self.result.segmentation is not None:
            live_segmentation.clicked(self, row, column)
            return
        from cnnviewer.engine.detection.overlay import detection_at
        from cnnviewer.engine.detection.scene import frame_point
        column = frame_point(self.view.currentIndex(), self.frame.pixels.shape[1], column)
        if self.view.currentIndex() == 2:
            self._anchor_point = (column, row)
            self.redraw()
            return
        self.select_detection(detection_at(self.shown, column, row))

    def select_detection(self, detection, frame_name: str | None = None) -> None:
        """Highlight a detection and make every other panel explain it (its score as the target)."""
        self.selected = detection
        self.redraw()
        if detection is None or self.result is None or self._controller is None:
            return
        from cnnviewer.ui.panels.live_capture import explain
        explain(self, detection, frame_name)

    # ---------------------------------------------------------------- controls
    def toggle_pause(self) -> None:
        self.paused = self.camera.paused = not self.paused
        self.pause_button.setText("Resume" if self.paused else "Pause")
        self.pipeline.pause(self.paused)

    def step(self) -> None:
        """One frame of a paused file source."""
        if not self.paused:
            self.toggle_pause()
        self.pipeline.step()

    def _on_capture_clicked(self) -> None:
        if self.frame is None:
            self.note("Nothing to capture yet: choose a source.")
            return
        folder = file_dialogs.save_folder(self, "Save the capture in")
        if folder:
            self.capture(folder)

    def capture(self, folder: str | Path) -> Path | None:
        """Save the annotated frame (PNG) and its detections (COCO-style JSON) in `folder`, say where;
        the raw frame becomes every panel's input image (live_capture.py); a class map: live_segmentation.py."""
        if self.result is not None and self.result.segmentation is not None:
            return live_segmentation.capture(self, folder)
        from cnnviewer.ui.panels.live_capture import capture
        return capture(self, folder)
