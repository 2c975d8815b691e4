"""Where the main window and its floating panels sit: always on the screen the app opens on."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication, QMainWindow

WINDOW_FRAME = (16, 48)   # title bar and borders to leave room for before the window is shown


def fit_to_screen(window: QMainWindow) -> None:
    """Keep the whole window, its tab bars and status bar on the screen it opens on
    (a first launch at 1400×880, or a layout saved on a larger screen, would not fit a laptop)."""
    screen = window.screen() or QApplication.primaryScreen()
    if screen is None:
        return
    available = screen.availableGeometry()
    frame = window.frameGeometry().size() - window.geometry().size()   # title bar and borders, once shown
    frame_width, frame_height = (frame.width(), frame.height()) if window.isVisible() else WINDOW_FRAME
    width = min(window.width(), available.width() - frame_width)
    height = min(window.height(), available.height() - frame_height)
    if (width, height) != (window.width(), window.height()):
        window.resize(width, height)
    if not available.contains(window.frameGeometry()):
        window.move(max(available.left(), min(window.x(), available.right() - window.frameGeometry().width())),
                    max(available.top(), min(window.y(), available.bottom() - window.frameGeometry().height())))


def bring_floating_docks_forward(window: QMainWindow, docks) -> None:
    """Floating panels restored from the last run go on screen and in front of the main window.

    restoreState shows them before the main window is mapped, so a window manager stacks
    them behind it (or where a since-unplugged screen was); View still says they are open.
    """
    screen = window.screen() or QApplication.primaryScreen()
    if screen is None:
        return
    available = screen.availableGeometry()
    for dock in docks:
        if not dock.isFloating() or dock.isHidden():
            continue
        box = dock.frameGeometry()
        if not available.contains(box):
            border = box.size() - dock.size()
            width = min(box.width(), available.width())
            height = min(box.height(), available.height())
            dock.resize(width - border.width(), height - border.height())
            dock.move(max(available.left(), min(box.x(), available.right() + 1 - width)),
                      max(available.top(), min(box.y(), available.bottom() + 1 - height)))   # frame position
        dock.raise_()
