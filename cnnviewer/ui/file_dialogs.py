"""File dialogs that open in the folder the user last used (kept across runs by the main window).

Saving remembers its own folder: save dialogs that opened where an image folder had just been
indexed made one Enter write synthesis.png into the dataset, where the next index picked it up.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import QFileDialog, QWidget

_last_folder: list[str] = [""]        # every open dialog of the app
_last_save_folder: list[str] = [""]   # every save dialog (and "save in" folder choice)


def last_folder() -> str:
    """The folder the next dialog opens in ('' lets Qt choose)."""
    return _last_folder[0]


def set_last_folder(folder: str | Path | None) -> None:
    """Remember `folder` (or a file's folder) for the next dialog."""
    if folder:
        path = Path(folder)
        _last_folder[0] = str(path if path.is_dir() else path.parent)


def last_save_folder() -> str:
    """Where the next save dialog opens: the last folder saved into, else Pictures, Documents or home."""
    if _last_save_folder[0] and Path(_last_save_folder[0]).is_dir():
        return _last_save_folder[0]
    for kind in (QStandardPaths.StandardLocation.PicturesLocation,
                 QStandardPaths.StandardLocation.DocumentsLocation):
        folder = QStandardPaths.writableLocation(kind)
        if folder and Path(folder).is_dir():
            return folder
    return str(Path.home())


def set_last_save_folder(folder: str | Path | None) -> None:
    """Remember `folder` (or a saved file's folder) for the next save dialog."""
    if folder:
        path = Path(folder)
        _last_save_folder[0] = str(path if path.is_dir() else path.parent)


def open_file(parent: QWidget, title: str, filters: str) -> str:
    """A file to open, or '' if cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, title, last_folder(), filters)
    set_last_folder(path)
    return path


def save_file(parent: QWidget, title: str, name: str, filters: str) -> str:
    """Where to save `name` (suggested in the last save folder), or '' if cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, title, str(Path(last_save_folder()) / name), filters)
    set_last_save_folder(path)
    return path


def save_folder(parent: QWidget, title: str) -> str:
    """A folder to save into (starting where the last save went), or '' if cancelled."""
    path = QFileDialog.getExistingDirectory(parent, title, last_save_folder())
    set_last_save_folder(path)
    return path


def existing_folder(parent: QWidget, title: str) -> str:
    """A folder, or '' if cancelled."""
    path = QFileDialog.getExistingDirectory(parent, title, last_folder())
    set_last_folder(path)
    return path
