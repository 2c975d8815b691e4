"""A zoomable image view that reports hovers and clicks in image pixels."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtWidgets import QGraphicsRectItem


class _CanvasViewBox(pg.ViewBox):
    """A ViewBox whose left drag can draw a box instead of panning (ImageCanvas.set_box_drag)."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.box_drag = None    # a callable (start scene pos, current scene pos, finished) while on

    def mouseDragEvent(self, ev, axis=None) -> None:  # noqa: N802 - pyqtgraph override
        if self.box_drag is None or ev.button() != Qt.MouseButton.LeftButton:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        self.box_drag(ev.buttonDownScenePos(), ev.scenePos(), ev.isFinish())


class ImageCanvas(pg.GraphicsView):
    """One pg.ImageItem in a ViewBox: pan with the mouse, zoom with the wheel.

    Signals carry (row, column) in image pixels, floats; the owner maps them to
    tiles or neurons arithmetically.
    """

    hovered = Signal(float, float)
    clicked = Signal(float, float)
    left = Signal()
    box_dragged = Signal(float, float, float, float)   # y0, x0, y1, x1 in image pixels (set_box_drag on)
    reshaped = Signal()   # the view's width/height ratio changed a lot: a mosaic may re-arrange

    RESHAPE_RATIO = 1.25   # re-arrange a mosaic only when the view's aspect changes by more than this

    def __init__(self, parent=None) -> None:
        super().__init__(parent, background=(30, 30, 34))
        self.view = _CanvasViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.setCentralItem(self.view)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image_item)
        self.highlight = pg.QtWidgets.QGraphicsRectItem()
        self.highlight.setPen(pg.mkPen((255, 80, 80), width=2, cosmetic=True))
        self.highlight.setVisible(False)
        self.view.addItem(self.highlight)
        self._shape: tuple[int, ...] | None = None
        self.overlay_item: pg.ImageItem | None = None   # made on first use (show_overlay)
        self._rubber: QGraphicsRectItem | None = None
        self._arranged_for = 1.0
        self._fit_extra: QRectF | None = None   # drawn beyond the image (e.g. a field on padding)
        self._reshape_timer = QTimer(self, singleShot=True, interval=150)
        self._reshape_timer.timeout.connect(self._check_reshaped)
        self.setMouseTracking(True)
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.scene().sigMouseClicked.connect(self._on_mouse_clicked)

    def aspect(self) -> float:
        """Width / height of the visible area: what a mosaic shown here should be arranged for."""
        self._arranged_for = max(self.width(), 1) / max(self.height(), 1)
        return self._arranged_for

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        timer = getattr(self, "_reshape_timer", None)   # pyqtgraph resizes during __init__
        if timer is not None:
            timer.start()

    def _check_reshaped(self) -> None:
        """After a resize settles: fit again (a view fitted while hidden is a speck in a corner)."""
        if not self.has_image():
            return
        self.fit()
        now = max(self.width(), 1) / max(self.height(), 1)
        if max(now, self._arranged_for) / min(now, self._arranged_for) > self.RESHAPE_RATIO:
            self.reshaped.emit()

    def fit_also(self, rect: QRectF | None) -> None:
        """Keep `rect` (image pixels) in view when fitting, beside the image itself.

        Refits only when the rectangle is not already visible, so a zoom the user chose stays.
        """
        previous, self._fit_extra = self._fit_extra, rect
        if (rect is not None and not self.view.viewRect().contains(rect)) or (rect is None and previous is not None):
            self.fit()

    def fit(self) -> None:
        """Show the whole image (and the extra rectangle, if any)."""
        if self._shape is None:
            return
        area = QRectF(0, 0, self._shape[1], self._shape[0])
        if self._fit_extra is not None:
            area = area.united(self._fit_extra)
        self.view.setRange(rect=area, padding=0.02)

    def has_image(self) -> bool:
        """True once an image is shown."""
        return self._shape is not None

    def image(self) -> np.ndarray | None:
        """The array being shown."""
        return self.image_item.image

    def show_image(self, pixels: np.ndarray, keep_view: bool = False) -> None:
        """Show a uint8 (H, W) or (H, W, 3) array; re-fit the view when its size changes."""
        resized = pixels.shape[:2] != (self._shape or (None, None))[:2]
        self.image_item.setImage(pixels, levels=(0, 255), autoLevels=False)
        self._shape = pixels.shape
        if resized or not keep_view:
            self.fit()

    def clear(self) -> None:
        """Show nothing."""
        self.image_item.clear()
        self._shape = None
        self.highlight.setVisible(False)
        self.clear_overlay()

    def mark(self, y: int, x: int, height: int, width: int) -> None:
        """Outline a rectangle (e.g. the selected tile)."""
        self.highlight.setRect(x - 0.5, y - 0.5, width + 1, height + 1)
        self.highlight.setVisible(True)

    def unmark(self) -> None:
        """Remove the outline."""
        self.highlight.setVisible(False)

    def _pixel(self, scene_pos: QPointF) -> tuple[float, float] | None:
        if self._shape is None:
            return None
        point = self.view.mapSceneToView(scene_pos)
        y, x = point.y(), point.x()
        if 0 <= y < self._shape[0] and 0 <= x < self._shape[1]:
            return y, x
        return None

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        pixel = self._pixel(scene_pos)
        if pixel is None:
            self.left.emit()
        else:
            self.hovered.emit(*pixel)

    def _on_mouse_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or event.double():
            return
        pixel = self._pixel(event.scenePos())
        if pixel is not None:
            self.clicked.emit(*pixel)

    # ------------------------------------------------------------ additions: an overlay and a dragged box
    def show_overlay(self, rgba: np.ndarray, rect: QRectF, opacity: float) -> None:
        """Draw `rgba` (h, w, 4) uint8 over the image, stretched onto `rect` (image pixels), at `opacity`:
        a class map over the part of the photo the model saw."""
        if self.overlay_item is None:
            self.overlay_item = pg.ImageItem(axisOrder="row-major")
            self.overlay_item.setZValue(1)
            self.view.addItem(self.overlay_item)
        self.overlay_item.setImage(rgba, levels=(0, 255), autoLevels=False)
        self.overlay_item.setRect(rect)
        self.overlay_item.setOpacity(opacity)
        self.overlay_item.setVisible(True)

    def set_overlay_opacity(self, opacity: float) -> None:
        """Dim or strengthen the overlay: no pixels recomputed."""
        if self.overlay_item is not None:
            self.overlay_item.setOpacity(opacity)

    def clear_overlay(self) -> None:
        """Remove the overlay (a new image or model: never a stale one)."""
        if self.overlay_item is not None:
            self.overlay_item.clear()
            self.overlay_item.setVisible(False)

    def has_overlay(self) -> bool:
        """An overlay is drawn."""
        return self.overlay_item is not None and self.overlay_item.isVisible() and \
            self.overlay_item.image is not None

    def set_box_drag(self, enabled: bool) -> None:
        """Left drag draws a box and emits `box_dragged` (instead of panning; the middle button still pans)."""
        self.view.box_drag = self._on_box_drag if enabled else None

    def _on_box_drag(self, start: QPointF, now: QPointF, finished: bool) -> None:
        if self._shape is None:
            return
        a, b = self.view.mapSceneToView(start), self.view.mapSceneToView(now)
        height, width = self._shape[:2]
        y0, y1 = sorted((min(max(a.y(), 0.0), height), min(max(b.y(), 0.0), height)))
        x0, x1 = sorted((min(max(a.x(), 0.0), width), min(max(b.x(), 0.0), width)))
        if self._rubber is None:
            self._rubber = QGraphicsRectItem()
            self._rubber.setPen(pg.mkPen((255, 255, 255), width=1.5, style=Qt.PenStyle.DashLine, cosmetic=True))
            self._rubber.setZValue(3)
            self.view.addItem(self._rubber)
        self._rubber.setRect(x0, y0, x1 - x0, y1 - y0)
        self._rubber.setVisible(not finished)
        if finished and y1 > y0 and x1 > x0:
            self.box_dragged.emit(y0, x0, y1, x1)
