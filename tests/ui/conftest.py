"""Fixtures for UI tests: a real main window over a real session and job thread."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
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
    """Deliver drag-enter then drop with file URLs to `widget`, as a file manager would."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted(), "the window refused the drag"
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


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
