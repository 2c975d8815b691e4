"""A searchable class chooser: type part of a name, Enter takes the first match.

Gradients and Synthesis both choose the session's shared class with it; Qt's own editable combo
ignores Enter unless the text is an item exactly, which left "flamingo" typed but class 985 chosen.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QCompleter, QWidget


class ClassPicker(QComboBox):
    """An editable combo over "index: name" items; `chosen(index)` when the user picks one."""

    chosen = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.completer().setFilterMode(Qt.MatchFlag.MatchContains)
        self.completer().setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.completer().setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setMinimumWidth(180)
        self.lineEdit().setPlaceholderText("the top-1 (type a class name)")
        self.activated.connect(lambda index: self.chosen.emit(index))
        self.completer().activated[str].connect(self._take)
        self.lineEdit().returnPressed.connect(lambda: self._take(self.currentText()))

    def set_classes(self, names: tuple[str, ...] | list[str]) -> None:
        """List `names` (index i is class i) without emitting `chosen`."""
        self.blockSignals(True)
        self.clear()
        self.addItems([f"{i}: {name}" for i, name in enumerate(names)])
        self.setCurrentIndex(-1)
        self.setEditText("")
        self.blockSignals(False)

    def show_class(self, index: int | None) -> None:
        """Show `index` as the current class (None: none, the placeholder) without emitting `chosen`."""
        index = index if index is not None and 0 <= index < self.count() else -1   # -1: none (the top-1)
        if index != self.currentIndex() or (index < 0 and self.currentText()):
            self.blockSignals(True)
            self.setCurrentIndex(index)
            if index < 0:
                self.setEditText("")
            self.blockSignals(False)

    def match(self, text: str) -> int | None:
        """The class `text` names: an item, a bare index, or the first item containing it."""
        text = text.strip()
        if not text:
            return None
        exact = self.findText(text)
        if exact >= 0:
            return exact
        head = text.split(":", 1)[0].strip()
        if head.isdigit() and int(head) < self.count():
            return int(head)
        lowered = text.lower()
        for index in range(self.count()):
            if lowered in self.itemText(index).lower():
                return index
        return None

    def _take(self, text: str) -> None:
        index = self.match(text)
        if index is None:
            return
        self.completer().popup().hide()
        self.blockSignals(True)
        self.setCurrentIndex(index)
        self.blockSignals(False)
        self.chosen.emit(index)
