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
