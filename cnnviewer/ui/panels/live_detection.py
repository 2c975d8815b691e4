"""Live detection: camera, video file or image folder, detections drawn on every frame.

Frames arrive on the GUI thread (Qt Multimedia's video sink, or a timer for an
image folder); the newest waits while the detector runs and older ones are
dropped, so no queue grows and latency (capture to overlay) is measured from
each frame's capture time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, QUrl
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QLabel, QPushButton, QVBoxLayout, QWidget,
)

from cnnviewer.engine.session import Session
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.widgets.controls import labelled_row
from cnnviewer.ui.widgets.image_canvas import ImageCanvas

DETECTORS = ("mtcnn", "ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn",
             "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn", "fcos_resnet50_fpn", "ssd300_vgg16",
             "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn")


class LiveDetectionPanel(QWidget):
    """Detections over live frames with score / IoU thresholds, pause, step and capture."""

    def __init__(self, session: Session, jobs: UiJobs, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self._detector = None            # built on the job thread
        self._detector_name = ""
        self._pending = None             # (name, pixels, captured): the one frame waiting
        self._busy = False
        self._sequence: list[Path] = []
        self._sequence_index = 0
        self._player = self._sink = None
        self.frame = None                # (name, pixels, captured) last shown
        self.raw: list = []
        self.shown: list = []
        self.paused = False
        self.latencies: list[float] = []
        self._frame_times: list[float] = []
        self.source = QComboBox()
        self.source.addItem("Choose a source…")
        self.detector = QComboBox()
        self.detector.addItems(DETECTORS)
        self.score = _spin(0.5)
        self.iou = _spin(0.5)
        self.before_nms = QComboBox()
        self.before_nms.addItems(["after NMS", "before NMS"])
        self.pause_button = QPushButton("Pause")
        self.step_button = QPushButton("Step")
        self.capture_button = QPushButton("Capture (Space)")
        self.canvas = ImageCanvas(self)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row1 = labelled_row([("Source", self.source), ("Detector", self.detector)], stretch=False)
        row2 = labelled_row([("Score ≥", self.score), ("NMS IoU", self.iou), ("", self.before_nms),
                             ("", self.pause_button), ("", self.step_button), ("", self.capture_button)])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.status)
        self._timer = QTimer(self, interval=40)
        self._timer.timeout.connect(self._next_sequence_frame)
        self.source.activated.connect(self._on_source_chosen)
        self.detector.currentTextChanged.connect(lambda _t: self._redetect())
        for spin in (self.score, self.iou):
            spin.valueChanged.connect(lambda _v: self._refilter())
        self.before_nms.currentIndexChanged.connect(lambda _i: self._refilter())
        self.pause_button.clicked.connect(self.toggle_pause)
        self.step_button.clicked.connect(self.step)
        self.capture_button.clicked.connect(self._on_capture_clicked)
        self.capture_button.setShortcut(Qt.Key.Key_Space)
        self._list_sources()

    # ---------------------------------------------------------------- sources
    def _list_sources(self) -> None:
        try:
            from PySide6.QtMultimedia import QMediaDevices
            cameras = QMediaDevices.videoInputs()
        except ImportError:   # Qt Multimedia needs libpulse on Linux
            cameras = []
        for camera in cameras:
            self.source.addItem(f"Camera: {camera.description()}", camera)
        self.source.addItem("Video file…", "video")
        self.source.addItem("Folder of images…", "folder")
        if not cameras:
            self.status.setText("No camera found. Open a video file or a folder of images as the source.")

    def _on_source_chosen(self, index: int) -> None:
        kind = self.source.itemData(index)
        if kind == "video":
            path, _ = QFileDialog.getOpenFileName(self, "Video file", "", "Video (*.mp4 *.avi *.mov *.mkv *.webm)")
            if path:
                self.open_video(path)
        elif kind == "folder":
            path = QFileDialog.getExistingDirectory(self, "Folder of images")
            if path:
                self.open_folder(path)
        elif kind is not None:
            self.open_camera(kind)

    def _stop(self) -> None:
        self._timer.stop()
        if self._player is not None:
            self._player.stop()
        self._sequence = []

    def open_folder(self, folder: str | Path) -> None:
        """Play a folder of images in name order, about 25 frames a second."""
        from cnnviewer.engine.images import IMAGE_SUFFIXES

        self._stop()
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            self.status.setText(f"{Path(folder).name}: no images in this folder")
            return
        self._sequence, self._sequence_index = files, 0
        self._timer.start()

    def _next_sequence_frame(self) -> None:
        if self.paused or not self._sequence:
            return
        if self._sequence_index >= len(self._sequence):
            self._timer.stop()
            self.status.setText(self.status.text() + " End of the sequence.")
            return
        path = self._sequence[self._sequence_index]
        self._sequence_index += 1
        from PIL import Image
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as error:
            self.status.setText(f"{path.name}: {error}; the previous frame stays")
            return
        self.offer(path.name, pixels)

    def open_video(self, path: str) -> None:
        """Play a video file through Qt Multimedia (its FFmpeg backend)."""
        self._stop()
        from PySide6.QtMultimedia import QMediaPlayer, QVideoSink
        self._player, self._sink = QMediaPlayer(self), QVideoSink(self)
        self._player.setVideoSink(self._sink)
        self._sink.videoFrameChanged.connect(self._on_video_frame)
        self._player.errorOccurred.connect(lambda _e, text: self.status.setText(
            f"{Path(path).name}: {text}. The last frame stays on screen."))
        self._player.setSource(QUrl.fromLocalFile(path))
        self._player.play()

    def open_camera(self, device) -> None:
        """Stream a camera through QMediaCaptureSession; a vanished camera leaves the last frame."""
        self._stop()
        from PySide6.QtMultimedia import QCamera, QMediaCaptureSession, QVideoSink
        self._camera, self._capture_session, self._sink = QCamera(device, self), QMediaCaptureSession(self), QVideoSink(self)
        self._capture_session.setCamera(self._camera)
        self._capture_session.setVideoSink(self._sink)
        self._sink.videoFrameChanged.connect(self._on_video_frame)
        self._camera.errorOccurred.connect(lambda _e, text: self.status.setText(
            f"Camera: {text}. The last frame stays; choose the camera again to reconnect."))
        self._camera.start()

    def _on_video_frame(self, frame) -> None:
        if self.paused or not frame.isValid():
            return
        image = frame.toImage().convertToFormat(frame.toImage().Format.Format_RGB888)
        pixels = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
        self.offer("video", np.ascontiguousarray(pixels[:, :image.width() * 3].reshape(image.height(), image.width(), 3)))

    # ---------------------------------------------------------------- pipeline
    def offer(self, name: str, pixels: np.ndarray) -> None:
        """A new frame: it replaces any frame still waiting; the detector takes the newest."""
        self._pending = (name, pixels, time.perf_counter())
        self._frame_times = [t for t in self._frame_times if t > time.perf_counter() - 2] + [time.perf_counter()]
        if not self._busy:
            self._run_next()

    def _run_next(self) -> None:
        if self._pending is None:
            return
        frame, self._pending = self._pending, None
        self._busy = True
        name = self.detector.currentText()
        panel = self

        def work(_context):
            from cnnviewer.engine.detection import make_detector
            if panel._detector_name != name:
                panel._detector, panel._detector_name = make_detector(name), name
            return frame, panel._detector.raw(frame[1]), panel._detector.trained

        self._jobs.submit("detect", work, on_done=self._on_detected, on_error=self._on_failed)

    def _on_detected(self, result) -> None:
        self._busy = False
        self.frame, self.raw, trained = result
        self._trained = trained
        self.latencies = (self.latencies + [(time.perf_counter() - self.frame[2]) * 1000])[-30:]
        self._refilter()
        self._run_next()

    def _on_failed(self, message: str) -> None:
        self._busy = False
        self.status.setText(f"{message}. The previous frame stays.")
        self._run_next()

    def _redetect(self) -> None:
        if self.frame is not None:
            self.offer(self.frame[0], self.frame[1])

    def _refilter(self) -> None:
        """Thresholds and NMS on the last frame's raw detections (no new model run)."""
        if self.frame is None:
            return
        from cnnviewer.engine.detection import apply_thresholds, draw
        score, iou = self.score.value(), self.iou.value()
        before = self.before_nms.currentText() == "before NMS"
        self.shown = [d for d in self.raw if d.score >= score] if before else apply_thresholds(self.raw, score, iou)
        self.canvas.show_image(np.ascontiguousarray(draw(self.frame[1], self.shown)), keep_view=True)
        fps = (len(self._frame_times) - 1) / max(self._frame_times[-1] - self._frame_times[0], 1e-6) \
            if len(self._frame_times) > 1 else 0.0
        untrained = "" if getattr(self, "_trained", True) else " (untrained: no COCO weights offline)"
        self.status.setText(f"{self.frame[0]}: {len(self.shown)} shown of {len(self.raw)} raw "
                            f"({'before' if before else 'after'} NMS){untrained}. {fps:.1f} frames/s in, "
                            f"latency {np.median(self.latencies):.0f} ms (capture → overlay).")

    # ---------------------------------------------------------------- controls
    def toggle_pause(self) -> None:
        self.paused = not self.paused
        self.pause_button.setText("Resume" if self.paused else "Pause")
        if self._player is not None:
            (self._player.pause if self.paused else self._player.play)()

    def step(self) -> None:
        """One frame of a paused image sequence."""
        if self._sequence:
            was, self.paused = self.paused, False
            self._next_sequence_frame()
            self.paused = was

    def _on_capture_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the capture in")
        if folder:
            self.capture(folder)

    def capture(self, folder: str | Path) -> Path | None:
        """Save the annotated frame (PNG) and its detections (COCO-style JSON); the raw frame
        becomes every panel's input image."""
        if self.frame is None:
            return None
        from PIL import Image

        from cnnviewer.engine.detection import Frame, coco_records, draw
        from cnnviewer.engine.images import from_array
        stem = Path(folder) / time.strftime("capture-%Y%m%d-%H%M%S")
        Image.fromarray(draw(self.frame[1], self.shown)).save(f"{stem}.png")
        frame = Frame(0, f"{stem.name}.png", self.frame[1], self.frame[2])
        Path(f"{stem}.json").write_text(json.dumps(coco_records(frame, self.shown), indent=1), encoding="utf-8")
        self._session.set_image(from_array(np.ascontiguousarray(self.frame[1]), f"{stem.name}.png"))
        self.status.setText(f"Saved {stem}.png and .json; the frame is now every panel's input.")
        return Path(f"{stem}.png")


def _spin(value: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0.0, 1.0)
    spin.setSingleStep(0.05)
    spin.setValue(value)
    return spin
