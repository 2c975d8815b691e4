"""Drag and drop anywhere in the main window, routed by the panel the files land on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from cnnviewer.ui.main_window import MainWindow


class DropFilter(QObject):
    """Application-wide drag and drop: images set the input, weights files load."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self._window = window

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        kind = event.type()
        if kind not in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop):
            return False
        if not isinstance(watched, QWidget) or watched.window() is not self._window \
                and not self._window.isAncestorOf(watched):
            return False
        mime = event.mimeData()
        if not mime.hasUrls():
            return False
        if kind == QEvent.Type.Drop:
            window = self._window
            slot = watched          # a widget that takes files itself (style transfer's pictures)
            while slot is not None and not hasattr(slot, "drop_paths"):
                slot = slot.parentWidget()
            if slot is not None:
                slot.drop_paths([url.toLocalFile() for url in mime.urls()])
                event.setDropAction(Qt.DropAction.CopyAction)
                event.accept()
                return True
            on = {name: watched is panel or panel.isAncestorOf(watched) for name, panel in
                  (("live", window.live_detection), ("compare", window.compare), ("dataset", window.dataset))}
            window.open_paths([url.toLocalFile() for url in mime.urls()], **on)
        # Always a copy: some file managers delete the source after a drop accepted as a move.
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        return True
