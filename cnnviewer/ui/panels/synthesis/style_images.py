"""Style transfer's two pictures: drop an image file on either (or choose one), decoded on the job
thread so a large photo never holds the window; a bad file leaves the previous picture in place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.ui import file_dialogs
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.dataset.widgets import pixmap

THUMB = 84


class ImageSlot(QFrame):
    """One picture with its title; `drop_paths` is what the window's drop filter calls for a drop here."""

    changed = Signal()
    failed = Signal(str)

    def __init__(self, title: str, tip: str, jobs: UiJobs, empty_text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._jobs, self._title, self._empty_text = jobs, title, empty_text
        self.pixels: np.ndarray | None = None
        self.path: str | None = None
        self.fallback: tuple[np.ndarray | None, str] = (None, "")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAcceptDrops(True)      # a drop lands here (not on the dock), and the window's filter routes it
        self.setToolTip(tip)
        self.picture = QLabel(empty_text)
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setFixedSize(THUMB, THUMB)
        self.picture.setWordWrap(True)
        self.caption = QLabel(f"<b>{title}</b>")
        self.caption.setWordWrap(True)
        self.choose = QPushButton("Choose…")
        self.choose.setToolTip(f"Pick the {title.lower()} image (or drop an image file here)")
        self.choose.clicked.connect(self._on_choose)
        text = QVBoxLayout()
        text.addWidget(self.caption)
        text.addWidget(self.choose)
        text.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.picture)
        layout.addLayout(text, 1)

    def drop_paths(self, paths: list[str]) -> None:
        if paths:
            self.load(paths[0])

    def _on_choose(self) -> None:
        path = file_dialogs.open_file(self, f"{self._title} image", "Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff)")
        if path:
            self.load(path)

    def load(self, path: str | Path) -> None:
        """Decode `path` on the job thread; on success it replaces the picture, else `failed` says why."""
        def work(_context):
            from cnnviewer.engine.media.images import load_image
            return np.asarray(load_image(path).pixels)

        self._jobs.submit(f"synthesis_slot_{self._title}", work,
                          on_done=lambda pixels: self.set_picture(pixels, str(path)),
                          on_error=lambda text: self.failed.emit(f"{Path(path).name}: {text}"))

    def set_picture(self, pixels: np.ndarray | None, path: str | None) -> None:
        """Use this picture (None: none of its own; the slot then shows `fallback`'s)."""
        self.pixels, self.path = pixels, path
        self._show(pixels, Path(path).name if path else "")
        self.changed.emit()

    def show_fallback(self, pixels: np.ndarray | None, name: str) -> None:
        """What is used while the slot has no picture of its own (content: the current input)."""
        self.fallback = (pixels, name)
        if self.pixels is None:
            self._show(pixels, name)

    def _show(self, pixels: np.ndarray | None, name: str) -> None:
        if pixels is None and self.fallback[0] is not None:
            pixels, name = self.fallback
        if pixels is None:
            self.picture.clear()
            self.picture.setText(self._empty_text)
            self.caption.setText(f"<b>{self._title}</b>")
            return
        self.picture.setPixmap(pixmap(np.ascontiguousarray(pixels[..., :3])).scaled(
            THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))
        self.caption.setText(f"<b>{self._title}</b><br>{name}<br>{pixels.shape[1]}×{pixels.shape[0]}")


class StyleImages(QWidget):
    """Content (the current input unless another image is dropped) and style, side by side."""

    def __init__(self, jobs: UiJobs, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.content = ImageSlot("Content", "The photo whose layout is kept: the current input, or an image "
                                 "dropped here", jobs, "current input")
        self.style = ImageSlot("Style", "The image whose textures and colours (Gram matrices) are taken: drop "
                               "one here", jobs, "drop a style image")
        self.use_input = QPushButton("Use input")
        self.use_input.setToolTip("Take the content from the current input again (follows it as it changes)")
        self.use_input.clicked.connect(lambda: self.content.set_picture(None, None))
        self._jobs = jobs
        self.vggs: tuple[str, ...] | None = None    # VGGs with weights on disk (None: not looked up yet)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.content, 1)
        layout.addWidget(self.use_input)
        layout.addWidget(self.style, 1)

    def inputs(self, image) -> tuple[np.ndarray, np.ndarray, str | None, str | None] | str:
        """(content, style, content file, style file); the content is `image` (an InputImage) unless
        one was dropped. A missing picture: what to do about it, as a sentence."""
        content, style = self.content, self.style
        if style.pixels is None:
            return "Style transfer needs a style image: drop one on the Style box, or Choose…"
        if content.pixels is None and image is None:
            return "Style transfer needs a content image: open an image, or drop one on Content."
        if content.pixels is not None:
            return content.pixels, style.pixels, content.path, style.path
        source = image.source if Path(image.source).is_file() else None
        return np.asarray(image.pixels), style.pixels, source, style.path

    def backbone_note(self, found: Callable[[], None]) -> str:
        """Which features style transfer's "auto" uses, and why. The first call looks the VGG weights
        up on the job thread and returns ""; `found` is called when the answer is known."""
        if self.vggs is None:
            self.vggs = ()

            def look(_context):
                from cnnviewer.engine.synthesis.style import present_vggs
                return tuple(present_vggs())

            def done(names: tuple[str, ...]) -> None:
                self.vggs = names
                found()

            self._jobs.submit("synthesis_vggs", look, on_done=done)
            return ""
        if self.vggs:
            return f"Backbone: {self.vggs[0]} (its ImageNet weights are on disk)."
        return ("<b>No VGG weights on disk: using the current model's layers; results are rougher</b> "
                "than with VGG.")
