"""Fixtures for UI tests: a real main window over a real session and job thread."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from cnnviewer.engine.jobs import JobRunner
from cnnviewer.engine.session import Session
from cnnviewer.ui.controller import Controller
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.main_window import MainWindow


@pytest.fixture
def settings(tmp_path):
    """A private settings file, so tests never touch the user's."""
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def drop_files(widget, paths: list[Path]) -> None:
    """Drag `paths` (file URLs) onto the middle of `widget` and drop them, as a file manager does:
    the events go to the widget's window at that point (the panel is raised first, as a user sees it)."""
    from PySide6.QtWidgets import QDockWidget
    dock = widget if isinstance(widget, QDockWidget) else None
    parent = widget.parentWidget()
    while dock is None and parent is not None:
        dock = parent if isinstance(parent, QDockWidget) else None
        parent = parent.parentWidget()
    if dock is not None:
        dock.raise_()
        QApplication.processEvents()
    top = widget.window()
    spot = widget.mapTo(top, widget.rect().center())
    under = top.childAt(spot)
    assert under is not None and (under is widget or widget.isAncestorOf(under)) or widget is top, \
        f"{type(widget).__name__} is not on screen where the drop lands"
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(spot, Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(top.windowHandle(), enter)
    assert enter.isAccepted(), "the window refused the drag"
    event = QDropEvent(QPointF(spot), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(top.windowHandle(), event)


def make_window(qtbot, settings) -> MainWindow:
    session = Session()
    jobs = UiJobs(JobRunner(torch_threads=1))
    controller = Controller(session, jobs)
    window = MainWindow(session, jobs, controller, settings)
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window(qtbot, settings):
    """The main window with the real MobileNetV2 and the chelsea photo, first pass drawn."""
    window = make_window(qtbot, settings)
    window.controller.load_model("mobilenet_v2")
    window.controller.open_sample("chelsea")
    qtbot.waitUntil(lambda: window.predictions.predictions != () and window.feature_maps.view is not None,
                    timeout=30000)
    yield window
    window.jobs.runner.close()
