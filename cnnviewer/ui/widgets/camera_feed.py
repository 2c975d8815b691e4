"""Cameras through Qt Multimedia: listing, resolution, start/stop, reconnect; frames as numpy arrays.

Qt Multimedia needs libpulse on Linux; without it there are simply no cameras.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject
from PySide6.QtWidgets import QComboBox


def cameras() -> list:
    """The cameras Qt sees now (QCameraDevice), or none without Qt Multimedia."""
    try:
        from PySide6.QtMultimedia import QMediaDevices
        return list(QMediaDevices.videoInputs())
    except ImportError:
        return []


def frame_pixels(video_frame) -> np.ndarray:
    """A QVideoFrame as a new (H, W, 3) uint8 array.

    A copy, always: the QImage's memory goes when the frame does (a view would read freed memory).
    """
    image = video_frame.toImage()
    image = image.convertToFormat(image.Format.Format_RGB888)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, :image.width() * 3].copy().reshape(image.height(), image.width(), 3)


class CameraFeed(QObject):
    """One camera at a time, at the resolution chosen in `resolution`; frames go to `on_frame`.

    A camera that disconnects stops (the caller keeps its last frame) and starts
    again when it comes back.
    """

    def __init__(self, resolution: QComboBox, on_frame: Callable[[np.ndarray, float], None],
                 on_note: Callable[[str], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._resolution, self._on_frame, self._on_note = resolution, on_frame, on_note
        self._camera = None
        self.device = None            # the QCameraDevice chosen last (kept while it is unplugged)
        self.frames = 0
        self.paused = False
        try:
            from PySide6.QtMultimedia import QMediaDevices
            self._devices = QMediaDevices(self)
            self._devices.videoInputsChanged.connect(self._on_cameras_changed)
        except ImportError:
            self._devices = None

    @property
    def running(self) -> bool:
        return self._camera is not None

    def open(self, device) -> None:
        """Stream `device` at the chosen resolution (the list is refilled for a new camera)."""
        from PySide6.QtMultimedia import QCamera, QMediaCaptureSession, QVideoSink
        self.stop()
        if device is not self.device:
            self.device = device
            self._fill_resolutions(device)
        self._camera = QCamera(device, self)
        chosen = self._resolution.currentData()
        if chosen is not None:
            self._camera.setCameraFormat(chosen)
        self._session, self._sink = QMediaCaptureSession(self), QVideoSink(self)
        self._session.setCamera(self._camera)
        self._session.setVideoSink(self._sink)
        self._sink.videoFrameChanged.connect(self.take_frame)
        self._camera.errorOccurred.connect(lambda _error, text: self._on_note(f"Camera: {text}"))
        self._camera.start()
        self._on_note(f"Camera: {device.description()}")

    def reopen(self) -> None:
        """Restart the current camera, e.g. at a newly chosen resolution."""
        if self.device is not None:
            self.open(self.device)

    def stop(self) -> None:
        if self._camera is not None:
            self._camera.stop()
            self._camera = None

    def take_frame(self, video_frame) -> None:
        """A frame from the sink (also called by tests with a real QVideoFrame)."""
        if self.paused or not video_frame.isValid():
            return
        self.frames += 1
        self._on_frame(frame_pixels(video_frame), time.perf_counter())

    def _fill_resolutions(self, device) -> None:
        self._resolution.clear()
        seen = set()
        for video_format in sorted(device.videoFormats(), key=lambda f: -f.resolution().width()):
            size = (video_format.resolution().width(), video_format.resolution().height())
            if size not in seen:
                seen.add(size)
                self._resolution.addItem(f"{size[0]}×{size[1]}", video_format)
        self._resolution.setVisible(self._resolution.count() > 0)

    def _on_cameras_changed(self) -> None:
        """A camera vanished (keep the last frame, say so) or came back (resume it)."""
        if self.device is None:
            return
        present = {bytes(camera.id()): camera for camera in cameras()}
        wanted = bytes(self.device.id())
        if wanted not in present and self._camera is not None:
            self.stop()
            self._on_note(f"Camera {self.device.description()} disconnected. The last frame stays; "
                          "it resumes when the camera is back.")
        elif wanted in present and self._camera is None:
            self.open(present[wanted])
