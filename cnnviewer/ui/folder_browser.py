"""Stepping through a folder of images: previous / next, with the position in the status bar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget


class FolderBrowser(QWidget):
    """◀ 3 / 12 name ▶ — hidden until a folder is opened; Page Up / Page Down step too."""

    def __init__(self, open_image: Callable[[Path], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._open_image = open_image
        self.folder: Path | None = None
        self.images: list[Path] = []
        self.index = -1
        self.previous_button = QToolButton()
        self.previous_button.setText("◀")
        self.previous_button.setToolTip("Previous image of the folder (Page Up)")
        self.next_button = QToolButton()
        self.next_button.setText("▶")
        self.next_button.setToolTip("Next image of the folder (Page Down)")
        self.label = QLabel("")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.previous_button)
        layout.addWidget(self.label)
        layout.addWidget(self.next_button)
        self.previous_button.clicked.connect(self.previous)
        self.next_button.clicked.connect(self.next)
        self.setVisible(False)

    def open_folder(self, folder: Path, images: list[Path], start: int = 0) -> None:
        """Browse `images` (the folder's, in name order) from `start`."""
        self.folder, self.images = folder, list(images)
        self.setVisible(bool(self.images))
        self.go(start)

    def contains(self, path: str | Path) -> bool:
        return Path(path) in self.images

    def next(self) -> None:
        self.go(self.index + 1)

    def previous(self) -> None:
        self.go(self.index - 1)

    def go(self, index: int) -> None:
        """Open image `index` (wrapping around the folder)."""
        if not self.images:
            return
        self.index = index % len(self.images)
        image = self.images[self.index]
        self.label.setText(f"{self.folder.name if self.folder else ''}: {self.index + 1} / {len(self.images)} "
                           f"{image.name}")
        self.label.setToolTip(str(image))
        self._open_image(image)

    def forget(self) -> None:
        """An image from elsewhere became the input: stop browsing."""
        self.folder, self.images, self.index = None, [], -1
        self.setVisible(False)
