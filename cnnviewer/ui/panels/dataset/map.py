"""The dataset map view: every image a point (and many a thumbnail) at its 2-D embedding.

Zoom and pan as in any plot; hover a point to see the image and its top class; click it to make it
the input; Shift+drag a box or Ctrl+drag a lasso to see the images inside as a grid.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QWidget

MAX_THUMBNAILS = 400
THUMBNAILS_PER_TURN = 50


class _SelectingViewBox(pg.ViewBox):
    """A ViewBox that pans and zooms, and draws a box (Shift) or a lasso (Ctrl) to select points."""

    def __init__(self, on_selected) -> None:
        super().__init__()
        self._on_selected = on_selected
        self._path: list[QPointF] = []
        self._outline = QGraphicsPathItem()
        pen = QPen(QColor(255, 200, 0), 2, Qt.PenStyle.DashLine)
        pen.setCosmetic(True)                  # 2 screen pixels at any zoom, over the thumbnails
        self._outline.setPen(pen)
        self._outline.setBrush(QColor(255, 200, 0, 40))
        self._outline.setZValue(100)
        self.addItem(self._outline, ignoreBounds=True)

    def mouseDragEvent(self, event, axis=None) -> None:  # noqa: N802 - pyqtgraph override
        modifiers = event.modifiers()
        box = bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
        lasso = bool(modifiers & Qt.KeyboardModifier.ControlModifier)
        if event.button() != Qt.MouseButton.LeftButton or not (box or lasso):
            super().mouseDragEvent(event, axis)
            return
        event.accept()
        here = self.mapSceneToView(event.scenePos())
        if event.isStart():
            self._path = [self.mapSceneToView(event.buttonDownScenePos())]
        if box:
            start = self._path[0]
            polygon = QPolygonF([start, QPointF(here.x(), start.y()), here, QPointF(start.x(), here.y())])
        else:
            self._path.append(here)
            polygon = QPolygonF(self._path)
        outline = QPainterPath()
        outline.addPolygon(polygon)
        outline.closeSubpath()
        self._outline.setPath(outline)
        if event.isFinish():               # the outline stays: it shows what was selected
            self._on_selected(polygon)

    @property
    def outline(self) -> QPainterPath:
        return self._outline.path()

    def clear_outline(self) -> None:
        self._outline.setPath(QPainterPath())


class ThumbnailLayer(pg.GraphicsObject):
    """Every thumbnail of the map in one item that paints them all: one pg.ImageItem each cost
    ~1 ms to place and added its own paint to every repaint (the map's held the window 30-60 ms)."""

    def __init__(self) -> None:
        super().__init__()
        self.pictures: list[tuple[QImage, QRectF]] = []
        self._bounds = QRectF()
        self.setAcceptHoverEvents(False)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)   # exposedRect: only what shows

    def add(self, pictures: list[tuple[np.ndarray, QRectF]]) -> None:
        """Each (h, w, 3) uint8 picture, bottom row first (the view's y axis points up), into its rect."""
        self.prepareGeometryChange()          # once per batch: the scene re-indexes the item each time
        for pixels, rect in pictures:
            height, width = pixels.shape[:2]
            image = QImage(pixels.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
            self.pictures.append((image, rect))
            self._bounds = self._bounds.united(rect)
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt override
        return self._bounds

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        exposed = option.exposedRect       # zoomed in, most thumbnails are off screen
        for image, rect in self.pictures:
            if rect.intersects(exposed):
                painter.drawImage(rect, image)


class MapView(pg.PlotWidget):
    """Points coloured by label, thumbnails on a spread subset; emits rows."""

    picked = Signal(int)          # a point was clicked
    hovered = Signal(int)         # the pointer is over a point (-1: none)
    selected = Signal(object)     # a box or lasso closed: np.ndarray of rows inside

    def __init__(self, parent: QWidget | None = None) -> None:
        self.view_box = _SelectingViewBox(self._select_inside)
        super().__init__(parent, viewBox=self.view_box, background=(24, 24, 28))
        self.hideAxis("left")
        self.hideAxis("bottom")
        self.setAspectLocked(True)
        self.scatter = pg.ScatterPlotItem(size=7, pen=None, hoverable=True, hoverSize=12, tip=None,
                                          hoverPen=pg.mkPen("w", width=1.5))   # no raw "x: y: data=" tooltip
        self.chosen = pg.ScatterPlotItem(size=20, brush=None, pen=pg.mkPen((255, 200, 0), width=3))
        self.chosen.setZValue(50)                # the selected points ringed, over their thumbnails
        self.chosen.setAcceptHoverEvents(False)
        self.scatter.sigClicked.connect(self._on_clicked)
        self.scatter.sigHovered.connect(self._on_hovered)
        self.addItem(self.scatter)
        self.addItem(self.chosen)
        self.rows = np.zeros(0, np.int64)
        self.points = np.zeros((0, 2), np.float32)
        self._pending: list = []          # thumbnails still to be placed
        self._side = 1.0
        self._thumbnails_visible = True
        self._layer: ThumbnailLayer | None = None
        self.setToolTip("Scroll to zoom, drag to pan; Shift+drag a box or Ctrl+drag a lasso to select")

    def show_map(self, rows: np.ndarray, points: np.ndarray, colours: list[tuple[int, int, int]],
                 thumbnails: np.ndarray | None, thumbnail_rows: np.ndarray | None) -> None:
        """Draw the points; `thumbnails` (n, h, w, 3) of `thumbnail_rows` go on top of their points."""
        self.rows, self.points = np.asarray(rows), np.asarray(points, dtype=np.float32)
        self.highlight(np.zeros(0, np.int64))
        self.view_box.clear_outline()
        brushes = {colour: pg.mkBrush(*colour) for colour in set(colours)}   # one per colour: the symbol atlas
        self.scatter.setData(pos=self.points, brush=[brushes[c] for c in colours],   # draws each colour once
                             data=list(range(len(rows))))
        if self._layer is not None:
            self.view_box.removeItem(self._layer)
        self._layer = ThumbnailLayer()
        self._layer.setZValue(1)          # over the points: hover and clicks still reach them
        self._layer.setVisible(self._thumbnails_visible)
        self.view_box.addItem(self._layer, ignoreBounds=True)
        self._pending = []
        if thumbnails is not None and thumbnail_rows is not None and len(self.points):
            span = float(np.ptp(self.points, axis=0).max()) or 1.0
            self._side = span / max(10.0, 1.6 * np.sqrt(len(thumbnail_rows)))
            where = {int(row): i for i, row in enumerate(self.rows)}
            self._pending = [(where[int(row)], picture, colours[where[int(row)]])
                             for row, picture in zip(thumbnail_rows, thumbnails)]
        self.autoRange()
        self._add_thumbnails()

    def _add_thumbnails(self) -> None:
        """Some thumbnails per turn of the event loop, so that 400 never hold the GUI thread at once."""
        batch, self._pending = self._pending[:THUMBNAILS_PER_TURN], self._pending[THUMBNAILS_PER_TURN:]
        side, placed = self._side, []
        for i, picture, colour in batch:
            height, width = picture.shape[:2]
            framed = np.empty((height + 6, width + 6, 3), np.uint8)
            framed[:] = colour                                   # a frame in its label's colour
            framed[3:-3, 3:-3] = picture[::-1]
            x, y = self.points[i]
            placed.append((framed, QRectF(float(x) - side / 2, float(y) - side / 2, side, side)))
        self._layer.add(placed)
        if self._pending:
            QTimer.singleShot(0, self._add_thumbnails)

    @property
    def thumbnail_count(self) -> int:
        return 0 if self._layer is None else len(self._layer.pictures)

    def set_thumbnails_visible(self, visible: bool) -> None:
        self._thumbnails_visible = visible
        if self._layer is not None:
            self._layer.setVisible(visible)

    def clear_map(self) -> None:
        self.show_map(np.zeros(0, np.int64), np.zeros((0, 2)), [], None, None)

    def _on_clicked(self, _item, points, _event=None) -> None:
        if len(points):
            self.picked.emit(int(self.rows[points[0].data()]))

    def _on_hovered(self, _item, points, _event=None) -> None:
        self.hovered.emit(int(self.rows[points[0].data()]) if len(points) else -1)

    def highlight(self, rows: np.ndarray) -> None:
        """Ring the points of `rows` (the box or lasso selection); none: no rings."""
        where = np.isin(self.rows, np.asarray(rows))
        self.chosen.setData(pos=self.points[where] if where.any() else np.zeros((0, 2)))

    @property
    def highlighted(self) -> int:
        return len(self.chosen.data)

    def _select_inside(self, polygon: QPolygonF) -> None:
        inside = [i for i, (x, y) in enumerate(self.points)
                  if polygon.containsPoint(QPointF(float(x), float(y)), Qt.FillRule.OddEvenFill)]
        rows = self.rows[np.array(inside, dtype=np.int64)] if inside else np.zeros(0, np.int64)
        self.highlight(rows)
        self.selected.emit(rows)


def spread_subset(points: np.ndarray, count: int = MAX_THUMBNAILS) -> np.ndarray:
    """Indices of up to `count` points spread over the map: at most one per cell of a grid."""
    if len(points) <= count:
        return np.arange(len(points))
    cells = int(np.sqrt(count))
    low, span = points.min(axis=0), np.maximum(np.ptp(points, axis=0), 1e-9)
    cell = np.minimum(((points - low) / span * cells).astype(int), cells - 1)
    _, first = np.unique(cell[:, 0] * cells + cell[:, 1], return_index=True)
    return np.sort(first)[:count]
