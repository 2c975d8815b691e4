"""The Dataset panel's building blocks: a grid of captioned pictures and a histogram."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem, QWidget


def pixmap(pixels: np.ndarray) -> QPixmap:
    """An (H, W, 3) uint8 array as a QPixmap (copied: the array may go away)."""
    array = np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
    height, width = array.shape[:2]
    image = QImage(array.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(image.copy())


def square_pixmap(pixels: np.ndarray) -> QPixmap:
    """The picture centred on a transparent square: every item of a grid is laid out alike, so a
    portrait image keeps its caption under it like the landscape ones."""
    picture = pixmap(pixels)
    side = max(picture.width(), picture.height(), 1)
    square = QPixmap(side, side)
    square.fill(Qt.GlobalColor.transparent)
    painter = QPainter(square)
    painter.drawPixmap((side - picture.width()) // 2, (side - picture.height()) // 2, picture)
    painter.end()
    return square


class PictureGrid(QListWidget):
    """Pictures in a wrapping grid, each with a caption of up to two lines (elided to the cell; the
    full text is the tooltip) and a tooltip; `picked` (row) on click, where row is whatever the
    caller attached (an index row)."""

    picked = Signal(int)
    CAPTION = Qt.ItemDataRole.UserRole + 1

    def __init__(self, side: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.max_side = side
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setWordWrap(False)            # captions are elided per line here, never cut by the cell
        self.setTextElideMode(Qt.TextElideMode.ElideNone)
        self.setUniformItemSizes(True)
        self._set_side(side)
        self.setSelectionMode(QListWidget.SelectionMode.SingleSelection)
        self.itemClicked.connect(lambda item: self.picked.emit(int(item.data(Qt.ItemDataRole.UserRole))))

    def _caption_height(self) -> int:
        return 2 * self.fontMetrics().lineSpacing() + 8

    def _set_side(self, side: int) -> None:
        self.setIconSize(QSize(side, side))
        self.setGridSize(QSize(side + 12, side + self._caption_height()))
        for i in range(self.count()):
            self._caption(self.item(i))

    def _caption(self, item: QListWidgetItem) -> None:
        metrics, width = self.fontMetrics(), self.gridSize().width() - 6
        lines = str(item.data(self.CAPTION) or "").split("\n")
        item.setText("\n".join(metrics.elidedText(line, Qt.TextElideMode.ElideMiddle, width) for line in lines))

    def fit(self) -> None:
        """The largest pictures (up to max_side) that show every entry without scrolling, when they can
        be at least 64 px: 9 top images fill the grid 3 by 3 instead of leaving a gap or a scroll bar."""
        count = self.count()
        width = self.width() - 2 * self.frameWidth() - self.verticalScrollBar().sizeHint().width() - 4
        height = self.height() - 2 * self.frameWidth() - 4
        if not count or width < 50 or height < 50:
            return
        caption = self._caption_height()
        best = max(min((width // columns) - 12, (height // -(-count // columns)) - caption)
                   for columns in range(1, count + 1))
        self._set_side(int(max(64, min(self.max_side, best))))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self.fit()

    def show_pictures(self, entries: list[tuple[int, np.ndarray, str, str]]) -> None:
        """(row, pixels, caption, tooltip) per picture, in order; a caption's lines split at "\\n"."""
        self.clear()
        for row, pixels, caption, tooltip in entries:
            item = QListWidgetItem(QIcon(square_pixmap(pixels)), "")
            item.setData(Qt.ItemDataRole.UserRole, row)
            item.setData(self.CAPTION, caption)
            item.setToolTip(tooltip)
            item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            self.addItem(item)
            self._caption(item)
        self.fit()

    def captions(self) -> list[str]:
        """The text each item shows (elided), in order."""
        return [self.item(i).text() for i in range(self.count())]

    def rows(self) -> list[int]:
        return [int(self.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.count())]


class Histogram(pg.PlotWidget):
    """A unit's per-image maximum over the folder, with the top-k's threshold marked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background=(30, 30, 34))
        self.setLabel("bottom", "maximum activation in an image")
        self.setLabel("left", "images")
        self.setMouseEnabled(x=False, y=False)
        self.getAxis("bottom").enableAutoSIPrefix(False)
        self.getAxis("left").enableAutoSIPrefix(False)
        self.getPlotItem().layout.setContentsMargins(4, 10, 12, 4)   # the top tick ("1.0") is not cut in half
        self.hideButtons()
        self.bars = pg.BarGraphItem(x0=[], x1=[], y0=0, height=[], brush=(86, 156, 214))
        self.addItem(self.bars)
        self.threshold = pg.InfiniteLine(angle=90, pen=pg.mkPen((255, 200, 0), width=2, style=Qt.PenStyle.DashLine))
        self.addItem(self.threshold)
        self.threshold.setVisible(False)

    def show_counts(self, counts: np.ndarray, edges: np.ndarray, threshold: float | None) -> None:
        self.bars.setOpts(x0=edges[:-1], x1=edges[1:], height=counts)
        self.threshold.setVisible(threshold is not None)
        if threshold is not None:
            self.threshold.setValue(threshold)
        self.autoRange()

    def clear_counts(self) -> None:
        self.bars.setOpts(x0=[], x1=[], height=[])
        self.threshold.setVisible(False)
