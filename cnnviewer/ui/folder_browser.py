"""Stepping through a folder of images: previous / next, with the position in the status bar.

It covers what the Dataset index covers (subfolders too) and steps over files that cannot be read
(an empty .png, a text file named .webp, a truncated JPEG): a step never lands on an error message
with the old image still shown. Files are checked lazily, when a step reaches them, cheaply: a
JPEG is decoded at 1/8 scale, other formats have their structure verified, not decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget



def nested_images(folder: Path) -> list[Path]:
    """The images under `folder`'s subfolders too, as the index lists them; none when it cannot be listed."""
    try:
        from cnnviewer.engine.dataset.index import folder_images   # numpy: not before the window shows

        return folder_images(folder)
    except Exception:   # noqa: BLE001 - IndexError_ (vanished, unlistable)
        return []


def readable(path: Path) -> bool:
    """Whether Pillow can read `path` through to its end (cheap: see the module docstring)."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(image.width // 8, 1), max(image.height // 8, 1)))
                image.load()
            else:
                image.verify()
    except Exception:   # noqa: BLE001 - any failure of a third-party decoder means "cannot be read"
        return False
    return True


class FolderBrowser(QWidget):
    """◀ 3 / 12 name ▶ — hidden until a folder is opened; Page Up / Page Down step too."""

    def __init__(self, open_image: Callable[[Path], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._open_image = open_image
        self.folder: Path | None = None
        self.images: list[Path] = []
        self.index = -1
        self.unreadable: set[Path] = set()
        self._checked: set[Path] = set()
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
        """Browse the folder's images from `start`: with its subfolders, as the index lists them
        (`images`, the caller's top-level list, when the folder cannot be listed so)."""
        try:
            from cnnviewer.engine.dataset.index import folder_images

            listed = folder_images(folder)
        except Exception:   # noqa: BLE001 - IndexError_ (vanished, unlistable): the caller's list
            listed = list(images)
        self.folder, self.images = folder, listed or list(images)
        self.unreadable, self._checked = set(), set()
        self.setVisible(bool(self.images))
        self.go(start)

    def contains(self, path: str | Path) -> bool:
        return Path(path) in self.images

    def next(self) -> None:
        self.go(self.index + 1)

    def previous(self) -> None:
        self.go(self.index - 1, step=-1)

    def _readable(self, path: Path) -> bool:
        if path not in self._checked:
            self._checked.add(path)
            if not readable(path):
                self.unreadable.add(path)
        return path not in self.unreadable

    def go(self, index: int, step: int = 1) -> None:
        """Open image `index` (wrapping around the folder), or the next readable one in the
        direction of `step`; none readable: say so and keep the current image."""
        if not self.images:
            return
        for tried in range(len(self.images)):
            candidate = (index + step * tried) % len(self.images)
            if self._readable(self.images[candidate]):
                break
        else:
            self.label.setText(f"{self.folder.name if self.folder else ''}: no readable image")
            return
        self.index = candidate
        image = self.images[self.index]
        skipped = f" ({len(self.unreadable)} unreadable skipped)" if self.unreadable else ""
        self.label.setText(f"{self.folder.name if self.folder else ''}: {self.index + 1} / {len(self.images)} "
                           f"{image.name}{skipped}")
        self.label.setToolTip(str(image))
        self._open_image(image)

    def forget(self) -> None:
        """An image from elsewhere became the input: stop browsing."""
        self.folder, self.images, self.index = None, [], -1
        self.setVisible(False)
