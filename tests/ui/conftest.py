"""Fixtures for UI tests: a real main window over a real session and job thread."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from cnnviewer.engine.jobs import JobRunner
from cnnviewer.engine.session import Session
from cnnviewer.ui.controller import Controller
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.main_window import MainWindow


@pytest.fixture
def settings(tmp_path):
    """A private settings file, so tests never touch the user's."""
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


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
