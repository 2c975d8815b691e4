"""Small layout helpers shared by panels."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget


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
