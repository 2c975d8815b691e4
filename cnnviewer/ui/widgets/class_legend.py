"""The classes of a class map, largest area first: swatch, name, share of the map and mean probability.
Clicking one shows only that class (and makes it the target); clicking it again shows all."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QWidget

MAX_ENTRIES = 40   # a random network's map can hold hundreds of classes: the rest are summed in one line


class ClassLegend(QListWidget):
    """One row per class present; `class_clicked(index)` on a click, `all_clicked` on 'All classes'."""

    class_clicked = Signal(int)
    all_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setIconSize(QSize(14, 14))
        self.setUniformItemSizes(True)
        self.setToolTip("Classes in the map by area (share of the picture, mean probability). Click one to "
                        "show only it and explain it over the whole map; click it again to show all.")
        self.itemClicked.connect(self._on_item_clicked)
        self.entries: tuple = ()

    def set_entries(self, legend, colours: np.ndarray, solo: int | None = None) -> None:
        """Rows for `legend` (LegendEntry tuple, by area); `solo`: the class shown alone, if any."""
        self.clear()
        self.entries = tuple(legend)
        everything = QListWidgetItem("All classes")
        everything.setData(Qt.ItemDataRole.UserRole, -1)
        self.addItem(everything)
        for entry in self.entries[:MAX_ENTRIES]:
            item = QListWidgetItem(_swatch(colours[entry.class_index]),
                                   f"{entry.name}   {entry.area:.1%} of the map, p {entry.mean_probability:.2f}")
            item.setData(Qt.ItemDataRole.UserRole, entry.class_index)
            item.setToolTip(f"{entry.name} (class {entry.class_index}): {entry.area:.1%} of the map, "
                            f"mean probability {entry.mean_probability:.1%} over its pixels")
            self.addItem(item)
        rest = self.entries[MAX_ENTRIES:]
        if rest:
            more = QListWidgetItem(f"… {len(rest)} more classes, {sum(e.area for e in rest):.1%} together")
            more.setFlags(Qt.ItemFlag.NoItemFlags)
            self.addItem(more)
        self.show_solo(solo)

    def show_solo(self, solo: int | None) -> None:
        """Mark the class shown alone (None: 'All classes')."""
        for row in range(self.count()):
            item = self.item(row)
            value = item.data(Qt.ItemDataRole.UserRole)
            if value is not None and value == (-1 if solo is None else solo):
                self.blockSignals(True)
                self.setCurrentItem(item)
                self.blockSignals(False)
                return

    def row_of(self, class_index: int) -> int:
        """The row of a class (-1 when it is not listed)."""
        for row in range(self.count()):
            if self.item(row).data(Qt.ItemDataRole.UserRole) == class_index:
                return row
        return -1

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        value = item.data(Qt.ItemDataRole.UserRole)
        if value is None:
            return
        if value == -1:
            self.all_clicked.emit()
        else:
            self.class_clicked.emit(int(value))


def _swatch(colour: np.ndarray) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(int(colour[0]), int(colour[1]), int(colour[2])))
    return QIcon(pixmap)
