"""Every status message of the session, kept: the status bar shows each for seconds, the log for good."""

from __future__ import annotations

import time

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

MAX_ENTRIES = 1000


class MessageLog:
    """Messages with their time, newest last."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, str]] = []

    def add(self, text: str) -> None:
        if text and (not self.entries or self.entries[-1][1] != text):
            self.entries = (self.entries + [(time.time(), text)])[-MAX_ENTRIES:]

    def text(self) -> str:
        return "\n".join(f"{time.strftime('%H:%M:%S', time.localtime(at))}  {text}" for at, text in self.entries)


class MessageLogDialog(QDialog):
    """View > Messages: the log, selectable and copyable; Clear empties it."""

    def __init__(self, log: MessageLog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Messages")
        self.resize(720, 360)
        self._log = log
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close | QDialogButtonBox.StandardButton.Reset)
        buttons.button(QDialogButtonBox.StandardButton.Reset).setText("Clear")
        buttons.button(QDialogButtonBox.StandardButton.Reset).clicked.connect(self.clear)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view)
        layout.addWidget(buttons)
        self.refresh()

    def refresh(self) -> None:
        self.view.setPlainText(self._log.text())
        self.view.verticalScrollBar().setValue(self.view.verticalScrollBar().maximum())

    def clear(self) -> None:
        self._log.entries = []
        self.refresh()
