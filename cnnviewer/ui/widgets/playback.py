"""Controls for played sources: a threshold slider that shows its value, and a position bar."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)


class ValueSlider(QWidget):
    """A 0..1 slider in steps of 0.01 with its value written beside it (a spin box hides the
    effect of dragging; a bare slider hides the number)."""

    valueChanged = Signal(float)  # noqa: N815 - Qt naming, as QSlider

    def __init__(self, value: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setMinimumWidth(90)
        self.label = QLabel()
        self.label.setMinimumWidth(self.label.fontMetrics().horizontalAdvance("0.00") + 4)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        self.slider.valueChanged.connect(self._on_slider)
        self.setValue(value)

    def value(self) -> float:
        return self.slider.value() / 100

    def setValue(self, value: float) -> None:  # noqa: N802 - Qt naming
        self.slider.setValue(int(round(min(max(value, 0.0), 1.0) * 100)))
        self.label.setText(f"{self.value():.2f}")

    def setToolTip(self, text: str) -> None:  # noqa: N802 - Qt naming: the slider and its number
        super().setToolTip(text)
        self.slider.setToolTip(text)
        self.label.setToolTip(text)

    def _on_slider(self, _position: int) -> None:
        self.label.setText(f"{self.value():.2f}")
        self.valueChanged.emit(self.value())


class PlaybackBar(QWidget):
    """Replay, Loop and a frame-position slider for a video file or image folder.

    Hidden for cameras and for sources of unknown length. Dragging the slider asks for one
    frame (debounced, so a drag does not queue a decode per pixel moved).
    """

    seek_requested = Signal(int)
    loop_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.replay_button = QPushButton("Replay")
        self.replay_button.setToolTip("Play the source again from its first frame")
        self.loop = QCheckBox("Loop")
        self.loop.setToolTip("Start again at the first frame when the source ends")
        self.position = QSlider(Qt.Orientation.Horizontal)
        self.position.setToolTip("Frame position: drag to jump to a frame (it is detected at once, also paused)")
        self.label = QLabel("")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.replay_button)
        layout.addWidget(self.loop)
        layout.addWidget(self.position, 1)
        layout.addWidget(self.label)
        self._length = 0
        self._debounce = QTimer(self, singleShot=True, interval=60)
        self._debounce.timeout.connect(lambda: self.seek_requested.emit(self.position.value()))
        self.position.valueChanged.connect(self._on_moved)
        self.replay_button.clicked.connect(lambda: self.seek_requested.emit(0))
        self.loop.toggled.connect(self.loop_toggled)
        self.setVisible(False)

    def set_length(self, length: int | None) -> None:
        """A new source: its frame count (None or < 2: nothing to position)."""
        self._length = length or 0
        self.position.blockSignals(True)
        self.position.setRange(0, max(self._length - 1, 0))
        self.position.setValue(0)
        self.position.blockSignals(False)
        self.setVisible(self._length > 1)
        self.show_position(0)

    def show_position(self, index: int) -> None:
        """The frame on screen (without asking for it again)."""
        if not self._length:
            return
        if not self.position.isSliderDown():
            self.position.blockSignals(True)
            self.position.setValue(index)
            self.position.blockSignals(False)
        self.label.setText(f"frame {index + 1} / {self._length}")

    def _on_moved(self, value: int) -> None:
        self.label.setText(f"frame {value + 1} / {self._length}")
        self._debounce.start()
