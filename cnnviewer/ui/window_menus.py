"""The main window's menus and its list of recent files (images, weights and folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMenu, QMenuBar

from cnnviewer.engine.types import WEIGHT_SUFFIXES
from cnnviewer.ui import file_dialogs, help_menu
from cnnviewer.ui.folder_browser import FolderBrowser

MAX_RECENT = 10


class MenuWindow(Protocol):
    """What the menus use of the main window (a QMainWindow): typed here so that this module, which
    main_window imports, does not import main_window back."""

    settings: QSettings
    controller: Any     # ui.controller.Controller (its fully_convolutional toggle)
    docks: dict[str, QDockWidget]
    folder_browser: FolderBrowser
    recent_menu: QMenu

    def menuBar(self) -> QMenuBar: ...  # noqa: N802 - Qt's name
    def close(self) -> bool: ...
    def choose_image(self) -> None: ...
    def choose_image_folder(self) -> None: ...
    def choose_weights(self) -> None: ...
    def choose_model(self) -> None: ...
    def choose_architecture_file(self) -> None: ...
    def export_current_panel(self) -> None: ...
    def show_message_log(self) -> None: ...
    def reset_layout(self) -> None: ...
    def open_paths(self, paths: list[str], live: bool = False, compare: bool = False,
                   dataset: bool = False) -> None: ...
    def open_checkpoints(self, folder: str | Path) -> None: ...


def add_action(window: MenuWindow, menu, text: str, slot, shortcut=None) -> QAction:
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    action.triggered.connect(slot)
    menu.addAction(action)
    return action


def build_menus(window: MenuWindow) -> None:
    """File, View and Help."""
    file_menu = window.menuBar().addMenu("&File")
    add_action(window, file_menu, "&Open image…", window.choose_image, QKeySequence.StandardKey.Open)
    add_action(window, file_menu, "Open image &folder…", window.choose_image_folder, "Ctrl+Shift+O")
    add_action(window, file_menu, "&Next image in folder", window.folder_browser.next, "PgDown")
    add_action(window, file_menu, "&Previous image in folder", window.folder_browser.previous, "PgUp")
    window.recent_menu = file_menu.addMenu("Open &recent")
    add_action(window, file_menu, "Load &weights…", window.choose_weights, "Ctrl+W")
    add_action(window, file_menu, "Choose &model…", window.choose_model, "Ctrl+M")
    add_action(window, file_menu, "Open &architecture file…", window.choose_architecture_file)
    add_action(window, file_menu, "Open &checkpoint folder…", lambda: choose_checkpoint_folder(window))
    file_menu.setToolTipsVisible(True)    # beside the model it changes (a menu of its own moved Help)
    window.fully_convolutional_action = fully_convolutional_action(window, file_menu)
    file_menu.addSeparator()
    add_action(window, file_menu, "&Export current panel as PNG…", window.export_current_panel, "Ctrl+E")
    file_menu.addSeparator()
    add_action(window, file_menu, "&Quit", window.close, QKeySequence.StandardKey.Quit)
    view_menu = window.menuBar().addMenu("&View")
    for dock in window.docks.values():
        view_menu.addAction(dock.toggleViewAction())
    view_menu.addSeparator()
    add_action(window, view_menu, "&Messages…", window.show_message_log, "Ctrl+L")
    add_action(window, view_menu, "&Reset layout", window.reset_layout)
    menu = window.menuBar().addMenu("&Help")
    add_action(window, menu, "&Keyboard shortcuts", lambda: help_menu.show_shortcuts(window),
               QKeySequence.StandardKey.HelpContents)
    add_action(window, menu, "&About cnnviewer", lambda: help_menu.show_about(window))
    refresh_recent_menu(window)


def choose_checkpoint_folder(window: MenuWindow) -> None:
    """File > Open checkpoint folder: a training run's checkpoints, moved through with the strip."""
    folder = file_dialogs.existing_folder(window, "Open checkpoint folder (a training run's checkpoints)")
    if folder:
        window.open_checkpoints(folder)


def fully_convolutional_action(window: MenuWindow, menu: QMenu) -> QAction:
    """File > Fully convolutional: checkable, kept in step with the toggle (a refusal or another
    model unticks it)."""
    toggle = window.controller.fully_convolutional
    action = QAction("Fully &convolutional", window, checkable=True)
    action.setToolTip("Run the classifier's pooling + linear head at every position of a larger input: a "
                      "coarse class map from the same weights (models whose head is global pooling + one "
                      "linear layer: MobileNet, ResNet, EfficientNet; not VGG or AlexNet)")
    action.setChecked(toggle.on)
    action.triggered.connect(toggle.set_on)

    def follow(on: bool) -> None:
        action.blockSignals(True)
        action.setChecked(on)
        action.blockSignals(False)

    toggle.changed.connect(follow)
    menu.addAction(action)
    return action


def recent_files(window: MenuWindow) -> list[str]:
    value = window.settings.value("recent_files", [])
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in value or []]


def remember_recent(window: MenuWindow, path: str) -> None:
    """Put `path` (an image, a weights file or a folder) first in File > Open recent."""
    recent = [p for p in recent_files(window) if p != path]
    window.settings.setValue("recent_files", [path] + recent[: MAX_RECENT - 1])
    refresh_recent_menu(window)


def _entry_text(path: str) -> str:
    item = Path(path)
    if item.suffix.lower() in WEIGHT_SUFFIXES:
        return f"weights: {item.name}"
    if item.suffix == "" and not item.is_file():
        return f"folder: {item.name}/"
    return item.name


def refresh_recent_menu(window: MenuWindow) -> None:
    window.recent_menu.clear()
    for path in recent_files(window):
        action = window.recent_menu.addAction(_entry_text(path))
        action.setToolTip(path)
        action.triggered.connect(lambda _checked=False, p=path: window.open_paths([p]))
    window.recent_menu.setEnabled(bool(recent_files(window)))
