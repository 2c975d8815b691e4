"""Drag and drop anywhere in the main window, routed by the panel the files land on."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QDockWidget, QMainWindow, QWidget


class DropFilter(QObject):
    """Drag and drop anywhere in the main window or a floating panel: images set the input, weights
    files load, folders and videos go to the panel they land on.

    It watches the windows (QWindow), which the platform hands every drag to before Qt passes it to
    a widget, and finds the widget under the drop itself: graphics views (most panels) would
    otherwise take the drag and drop it. An application-wide filter did the same at the cost of a
    Python call for every event of every widget (each paint, each timer), and under load a wait
    for the GIL each time: the window's repaints were measurably slower while indexing.

    The window hands over what the filter needs (its docks, the panels that take folders and
    videos by name, how to open files), so this module does not import main_window.
    """

    def __init__(self, window: QMainWindow, docks: dict[str, QDockWidget], targets: dict[str, QWidget],
                 open_paths: Callable[..., None]) -> None:
        """`targets`: keyword of `open_paths` -> the panel that a drop on it means (live=, compare=, ...)."""
        super().__init__(window)
        self._window, self._docks, self._targets, self._open_paths = window, docks, targets, open_paths
        for dock in docks.values():
            dock.topLevelChanged.connect(lambda _floating: QTimer.singleShot(0, self.watch_windows))

    def _windows(self) -> list[QWidget]:
        """The main window and the panels floating in windows of their own."""
        return [widget for widget in (self._window, *self._docks.values()) if widget.isWindow()]

    def watch_windows(self) -> None:
        """Filter the drags of the main window and of every floating panel (their windows come and go)."""
        for widget in self._windows():
            handle = widget.windowHandle()
            if handle is not None:
                handle.installEventFilter(self)      # once per window: Qt moves a repeated one to the front

    def _widget_under(self, handle: QObject, event) -> QWidget | None:
        for top in self._windows():
            if top.windowHandle() == handle:
                return top.childAt(event.position().toPoint()) or top
        return None

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        kind = event.type()
        if kind not in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop):
            return False
        watched = self._widget_under(watched, event)
        if watched is None:
            return False
        mime = event.mimeData()
        if not mime.hasUrls():
            return False
        if kind == QEvent.Type.Drop:
            slot = watched          # a widget that takes files itself (style transfer's pictures)
            while slot is not None and not hasattr(slot, "drop_paths"):
                slot = slot.parentWidget()
            if slot is not None:
                slot.drop_paths([url.toLocalFile() for url in mime.urls()])
                event.setDropAction(Qt.DropAction.CopyAction)
                event.accept()
                return True
            on = {name: watched is panel or panel.isAncestorOf(watched) for name, panel in self._targets.items()}
            self._open_paths([url.toLocalFile() for url in mime.urls()], **on)
        # Always a copy: some file managers delete the source after a drop accepted as a move.
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        return True
