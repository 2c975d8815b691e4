"""The checkpoint strip under the menu: a slider over a training run's checkpoints, shown only while
a folder of them is open."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QCheckBox, QLabel, QProxyStyle, QSlider, QStyle, QToolBar, QWidget

from cnnviewer.ui.checkpoints import CheckpointBrowser

DRAG_DEBOUNCE_MS = 80   # while the slider is dragged: load where it rests, not every tick it passes


class _ClickJumps(QProxyStyle):
    """A click on the slider's groove goes to that checkpoint (as in a video player), not one step."""

    def styleHint(self, hint, option=None, widget=None, returnData=None) -> int:  # noqa: N802 - Qt override
        if hint == QStyle.StyleHint.SH_Slider_AbsoluteSetButtons:
            return Qt.MouseButton.LeftButton.value
        return super().styleHint(hint, option, widget, returnData)


class CheckpointBar(QToolBar):
    """◀ slider ▶ 'epoch 3 · step 1200 (4 of 12)' Follow Close."""

    def __init__(self, browser: CheckpointBrowser, parent: QWidget | None = None) -> None:
        super().__init__("Checkpoints", parent)
        self.setObjectName("checkpoint_bar")
        self.setMovable(False)
        self.toggleViewAction().setVisible(False)   # shown by opening a folder, hidden by Close
        self.browser = browser
        self.title = QLabel("")
        self.previous_action = self._action("◀", "Previous checkpoint (Alt+Left)", "Alt+Left", lambda: self.step(-1))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setMinimumWidth(320)
        self.slider.setPageStep(1)
        self._slider_style = _ClickJumps()   # kept: the slider does not own its style
        self.slider.setStyle(self._slider_style)
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setToolTip("Move every panel through the run's checkpoints (arrow keys step)")
        self.next_action = self._action("▶", "Next checkpoint (Alt+Right)", "Alt+Right", lambda: self.step(1))
        self.label = QLabel("")
        self.label.setMinimumWidth(230)
        self.follow = QCheckBox("Follow")
        self.follow.setToolTip("Watch the folder: a checkpoint written from now on appears once its write is "
                               "complete; while the last one is shown, the new one is shown")
        self.close_action = QAction("Close", self)
        self.close_action.setToolTip("Close the checkpoint folder (the model shown stays)")
        self.addWidget(self.title)
        self.addAction(self.previous_action)
        self.addWidget(self.slider)
        self.addAction(self.next_action)
        self.addWidget(self.label)
        self.addWidget(self.follow)
        self.addAction(self.close_action)
        self._debounce = QTimer(self, singleShot=True, interval=DRAG_DEBOUNCE_MS)
        self._debounce.timeout.connect(self._request)
        self.slider.valueChanged.connect(self._on_value_changed)
        self.slider.sliderReleased.connect(self._request)
        self.follow.toggled.connect(browser.set_follow)
        self.close_action.triggered.connect(browser.close)
        browser.listed.connect(self._on_listed)
        browser.shown.connect(self._on_shown)
        browser.closed.connect(self.hide)
        browser.follow_changed.connect(self._on_follow_changed)
        self._requested: int | None = None   # the last index asked of the browser (or shown by it)
        self.hide()

    def _action(self, text: str, tip: str, keys: str, slot) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip)
        action.setShortcut(QKeySequence(keys))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(slot)
        return action

    def step(self, delta: int) -> None:
        """One checkpoint back or forward (the buttons and Alt+Left / Alt+Right)."""
        self.slider.setValue(max(0, min(self.slider.maximum(), self.slider.value() + delta)))

    def _on_listed(self, checkpoints: tuple) -> None:
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(len(checkpoints) - 1, 0))
        self.slider.blockSignals(False)
        folder = self.browser.folder
        self.title.setText(f" {folder.name if folder else ''}: ")
        self.title.setToolTip(str(folder or ""))
        self.show()

    def _on_follow_changed(self, on: bool) -> None:
        self.follow.blockSignals(True)
        self.follow.setChecked(on)
        self.follow.blockSignals(False)

    def _on_shown(self, index: int) -> None:
        self._requested = index
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self._describe(index)

    def _describe(self, index: int) -> None:
        checkpoints = self.browser.checkpoints
        if not 0 <= index < len(checkpoints):
            return
        checkpoint = checkpoints[index]
        self.label.setText(f"{checkpoint.label} ({index + 1} of {len(checkpoints)})")
        self.label.setToolTip(checkpoint.path)

    def _on_value_changed(self, index: int) -> None:
        self._describe(index)
        if self.slider.isSliderDown():
            self._debounce.start()
        else:
            self._request()

    def _request(self) -> None:
        self._debounce.stop()
        # Against the last request, not the index shown: ▶ then ◀ before the first load lands must
        # ask for the way back (the new request supersedes the pending one).
        if self.slider.value() != self._requested:
            self._requested = self.slider.value()
            self.browser.show(self.slider.value())
