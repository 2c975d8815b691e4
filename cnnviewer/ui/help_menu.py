"""Help menu: keyboard shortcuts (read from the menus) and versions (read without importing torch)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu, QMessageBox

PANEL_KEYS = (("Space", "Capture the live frame (Live detection)"),
              ("Wheel / drag", "Zoom / pan a picture or the architecture graph"),
              ("Double-click", "Fold or open a block (Architecture)"))


def shortcuts(window: QMainWindow) -> list[tuple[str, str]]:
    """(keys, what they do) of every menu action with a shortcut, then the panels' own keys."""
    found = [(action.shortcut().toString(QKeySequence.SequenceFormat.NativeText), action.text().replace("&", ""))
             for menu in window.menuBar().findChildren(QMenu) for action in menu.actions()
             if not action.shortcut().isEmpty()]
    return found + list(PANEL_KEYS)


def show_shortcuts(window: QMainWindow) -> None:
    rows = "".join(f"<tr><td><b>{keys}</b>&nbsp;&nbsp;</td><td>{what}</td></tr>" for keys, what in shortcuts(window))
    QMessageBox.information(window, "Keyboard shortcuts", f"<table>{rows}</table>")


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def about_text(model) -> str:
    """Versions of cnnviewer, torch, torchvision, Qt and pyqtgraph, and the device `model` runs on."""
    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import qVersion

    device = f"{model.device} ({model.dtype_name})" if model is not None else "chosen when a model loads"
    return (f"<b>cnnviewer {_installed('cnnviewer')}</b>: look inside convolutional neural networks.<br>"
            f"torch {_installed('torch')}, torchvision {_installed('torchvision')}, Qt {qVersion()} "
            f"(PySide6 {pyside_version}), pyqtgraph {_installed('pyqtgraph')}.<br>Device: {device}.")


def show_about(window) -> None:
    QMessageBox.about(window, "About cnnviewer", about_text(window.session.model))
