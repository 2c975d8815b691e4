"""File dialogs that open in the folder the user last used (kept across runs by the main window)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QWidget

_last_folder: list[str] = [""]   # one value for every dialog of the app


def last_folder() -> str:
    """The folder the next dialog opens in ('' lets Qt choose)."""
    return _last_folder[0]


def set_last_folder(folder: str | Path | None) -> None:
    """Remember `folder` (or a file's folder) for the next dialog."""
    if folder:
        path = Path(folder)
        _last_folder[0] = str(path if path.is_dir() else path.parent)


def open_file(parent: QWidget, title: str, filters: str) -> str:
    """A file to open, or '' if cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, title, last_folder(), filters)
    set_last_folder(path)
    return path


def save_file(parent: QWidget, title: str, name: str, filters: str) -> str:
    """Where to save `name` (suggested in the last folder), or '' if cancelled."""
    start = str(Path(last_folder()) / name) if last_folder() else name
    path, _ = QFileDialog.getSaveFileName(parent, title, start, filters)
    set_last_folder(path)
    return path


def existing_folder(parent: QWidget, title: str) -> str:
    """A folder, or '' if cancelled."""
    path = QFileDialog.getExistingDirectory(parent, title, last_folder())
    set_last_folder(path)
    return path
