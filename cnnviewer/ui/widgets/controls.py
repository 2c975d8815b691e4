"""Small layout helpers shared by panels."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget


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
