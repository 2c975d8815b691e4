"""Small layout helpers shared by panels."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QScrollArea,
    QSizePolicy,
    QWidget,
)


def labelled_row(pairs: list[tuple[str, QWidget]], stretch: bool = True) -> QHBoxLayout:
    """A row of controls, each after its label (an empty label adds none)."""
    row = QHBoxLayout()
    for text, widget in pairs:
        if text:
            row.addWidget(QLabel(text))
        row.addWidget(widget)
    if stretch:
        row.addStretch(1)
    return row


def on_screen(widget: QWidget) -> bool:
    """Whether any of `widget` can be seen: a dock tabbed behind another reports isVisible() but
    has an empty visible region, and must not compute views nobody sees."""
    return widget.isVisible() and not widget.visibleRegion().isEmpty()


def fit_names(combo: QComboBox, length: int) -> None:
    """Long item names must not widen the window (`length` characters shown); the open list shows them whole."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(length)
    widest = max((combo.fontMetrics().horizontalAdvance(combo.itemText(i)) for i in range(combo.count())), default=0)
    combo.view().setMinimumWidth(widest + 40)


class ScrollingRow(QScrollArea):
    """A row of controls that scrolls sideways when the dock is narrower than the row.

    A plain layout's minimum width is its widest row: one long row (Gradients' "all, side by
    side" shows every method's settings) forced the whole dock column wider and shrank the
    neighbouring column for good. This row asks for no width; it asks for its contents' height
    (plus the scroll bar's when the contents do not fit), and none when every control is hidden.
    """

    def __init__(self, row: QLayout, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        inner = QWidget()
        row.setContentsMargins(0, 0, 0, 0)
        inner.setLayout(row)
        inner.installEventFilter(self)
        self.setWidget(inner)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt override
        if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Resize):
            self.updateGeometry()   # a control shown or hidden: the row's height follows
        return super().eventFilter(watched, event)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        inner = self.widget().minimumSizeHint()
        bar = self.horizontalScrollBar().sizeHint().height() if inner.width() > self.viewport().width() else 0
        return QSize(0, inner.height() + bar if inner.height() > 0 else 0)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(0, self.sizeHint().height())


def set_elided(label: QLabel, text: str, width: int) -> None:
    """Show `text` in at most `width` pixels (ending in …), the whole of it as the tooltip: a long
    permanent status-bar field otherwise pushes the status message out of sight."""
    label.setText(label.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, width))
    label.setToolTip(text)
