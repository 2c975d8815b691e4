"""The main window's first-launch layout: which docks share a tab group, their proportions, the
window's size on a first launch, and dock tab titles that are never cut short."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QApplication, QDockWidget, QMainWindow, QTabBar

LEFT_SHARE = 0.38          # of the window's width: the input & predictions column
TOP_LEFT_SHARE = 0.54      # of that column's height: input & predictions above the filters group
FIRST_SCREEN_SHARE = 0.9   # a first window takes this much of the screen's free area (each way)
LEFT_TABS = ("filters",)   # under the input (a second tab group there did not survive a saved state)
RIGHT_TABS = ("feature_maps", "model_summary", "receptive_field", "architecture", "gradients", "faithfulness",
              "experiments", "live_detection", "compare", "dataset", "synthesis")


def tabify(window: QMainWindow, docks: dict[str, QDockWidget]) -> None:
    """The panels beside the input share one tab group, its first in front; their titles are never
    cut (FullTabTitles): nine in one bar were each cut to "Gradie…" at 1280×800."""
    for group in (LEFT_TABS, RIGHT_TABS):
        for key in group[1:]:
            window.tabifyDockWidget(docks[group[0]], docks[key])
        docks[group[0]].raise_()


def apply_proportions(window: QMainWindow, docks: dict[str, QDockWidget]) -> None:
    """The first-launch proportions for the window's size now (View > Reset layout too: a state
    saved at another width would otherwise keep that width's column sizes)."""
    left_dock, right_dock, lower_dock = docks["predictions"], docks["feature_maps"], docks[LEFT_TABS[0]]
    width = left_dock.width() + right_dock.width()       # the docks' room now: asking for more than
    height = left_dock.height() + lower_dock.height()    # there is would make the window grow
    left, top = int(width * LEFT_SHARE), int(height * TOP_LEFT_SHARE)
    window.resizeDocks([left_dock, right_dock], [left, width - left], Qt.Orientation.Horizontal)
    window.resizeDocks([left_dock, lower_dock], [top, height - top], Qt.Orientation.Vertical)


def first_launch_size(window: QMainWindow) -> None:
    """No saved geometry: use most of the screen (a fixed 1400×880 sat small in the middle of 1920×1080)."""
    screen = window.screen() or QApplication.primaryScreen()
    if screen is None:
        return
    available = screen.availableGeometry()
    width, height = int(available.width() * FIRST_SCREEN_SHARE), int(available.height() * FIRST_SCREEN_SHARE)
    window.resize(width, height)
    window.move(available.left() + (available.width() - width) // 2,
                available.top() + (available.height() - height) // 2)


class FullTabTitles(QObject):
    """Dock tab bars show whole titles and scroll, instead of eliding each to a few letters.

    QMainWindow makes a tab bar whenever docks are tabified (at start, on Reset layout, when the
    user drops one dock on another), so every tab bar is set up as it appears.
    """

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        window.installEventFilter(self)
        for bar in window.findChildren(QTabBar):
            self.fix(bar)

    @staticmethod
    def fix(bar: QTabBar) -> None:
        bar.setElideMode(Qt.TextElideMode.ElideNone)
        bar.setUsesScrollButtons(True)
        bar.setExpanding(False)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.ChildPolished and isinstance(event.child(), QTabBar):
            self.fix(event.child())
        return False


def window_model_title(model) -> str:
    """The model as the title bar and status bar name it: custom weights are named, so a user
    who loaded a fine-tuned file can see that it, not the pretrained weights, is active."""
    if model.weights_path and Path(model.weights_path).name != model.name:   # an ONNX file is its own name
        return f"{model.title} — custom: {Path(model.weights_path).name}"
    return model.title
