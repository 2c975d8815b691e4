"""The Input panel's class map: the overlay on the photo, its legend, opacity, the hover readout, and
the region the user picks to explain (a clicked output pixel, a dragged box, a legend class).

The map is computed on the job thread (Workbench.class_map, from the recorded pass); this thread only
recolours: the colour image is made once per map, opacity is the overlay item's own, and a legend click
rewrites only the alpha channel through a per-class table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QRectF, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.segmentation.class_map_view import ClassMapView, class_map_size, coloured, shown_alpha
from cnnviewer.engine.session import Selection, Session
from cnnviewer.ui.widgets.class_legend import ClassLegend
from cnnviewer.ui.widgets.image_canvas import ImageCanvas

if TYPE_CHECKING:
    from cnnviewer.ui.fully_convolutional import FullyConvolutionalToggle
    from cnnviewer.ui.jobs import UiJobs

JOB = "class_map"
HINT = "Click a pixel or drag a box to explain it; Esc: the whole map"


class ClassMapControls(QWidget):
    """The toggle, opacity, 'Whole image', the legend and a readout; drives the overlay on `canvas`."""

    shown = Signal(bool)     # a class map is drawn (the panel shows the legend's tab) or not

    def __init__(self, session: Session, canvas: ImageCanvas, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self.canvas = session, canvas
        self._jobs: UiJobs | None = None
        self._pending = False                 # a class-map job was submitted and has not answered
        self._workbench = None
        self.toggle: FullyConvolutionalToggle | None = None
        self.view: ClassMapView | None = None
        self.solo: int | None = None          # the class shown alone (a legend click), None: all
        self._rgba: np.ndarray | None = None  # the map's colours, made once per map
        self.fully_convolutional = QCheckBox("Fully convolutional")
        self.fully_convolutional.setToolTip(
            "Run the classifier's head (global pooling + linear) at every position of a 448-px square: a "
            "coarse map of which class each region looks like, from the same weights. Models with other "
            "heads (VGG, AlexNet) cannot; knock-outs are cleared when switching.")
        self.fully_convolutional.setVisible(False)     # until a toggle is attached
        self.fully_convolutional.toggled.connect(self._on_checkbox)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(55)
        self.opacity.setToolTip("Opacity of the class colours over the photo")
        self.opacity.valueChanged.connect(lambda v: self.canvas.set_overlay_opacity(v / 100.0))
        self.whole = QPushButton("Whole image")
        self.whole.setToolTip("Explain the chosen class over the whole map, not a region (Esc)")
        self.whole.clicked.connect(self.clear_region)
        self.legend = ClassLegend(self)
        self.legend.class_clicked.connect(self.choose_class)
        self.legend.all_clicked.connect(lambda: self.show_only(None))
        self.readout = QLabel(HINT)      # one line that never widens the dock: the photo keeps the height
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.region_item = QGraphicsRectItem()
        self.region_item.setPen(pg.mkPen((255, 225, 60), width=2, cosmetic=True))
        self.region_item.setZValue(2)
        self.region_item.setVisible(False)
        canvas.view.addItem(self.region_item)
        self._opacity_label = QLabel("Opacity")
        self.bar = QWidget(parent)    # the panel puts this row under its title; this widget beside the photo
        row = QHBoxLayout(self.bar)
        row.setContentsMargins(0, 0, 0, 0)
        for widget in (self.fully_convolutional, self._opacity_label, self.opacity, self.whole):
            row.addWidget(widget)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.legend, 1)
        layout.addWidget(self.readout)
        for widget in (canvas, self.legend):    # Esc over the photo or legend: the whole map (see eventFilter)
            widget.installEventFilter(self)
        canvas.hovered.connect(self._on_hovered)
        canvas.left.connect(lambda: self.readout.setText(HINT) if self.view is not None else None)
        canvas.clicked.connect(self._on_clicked)
        canvas.box_dragged.connect(self._on_box)
        session.image_changed.connect(lambda _image: self.reset())
        session.model_changed.connect(lambda _model: self.reset())
        session.forward_changed.connect(self._on_forward)
        session.forward_failed.connect(lambda _text: self.reset())
        session.selection_changed.connect(self._on_selection)
        self._show_controls(False)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        """Esc clears the region while one is chosen. The window's Esc (cancel the running job) is a
        shortcut too, and two shortcuts on one key fire neither: so the key is claimed here as an
        override only while there is a region to clear, and Esc cancels jobs otherwise."""
        kind = event.type()
        if kind in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress) and event.key() == Qt.Key.Key_Escape \
                and self._session.selection.region is not None and self.view is not None:
            event.accept()
            if kind == QEvent.Type.KeyPress:
                self.clear_region()
            return True
        return super().eventFilter(watched, event)

    def attach(self, jobs: UiJobs, workbench, toggle: FullyConvolutionalToggle | None = None) -> None:
        """Give the panel a job thread (and the window's fully convolutional toggle)."""
        self._jobs, self._workbench, self.toggle = jobs, workbench, toggle
        if toggle is not None:
            self.fully_convolutional.setVisible(True)
            self._set_checkbox(toggle.on)
            toggle.changed.connect(self._set_checkbox)
        self._show_controls(self.view is not None)
        if self._session.forward is not None:
            self._on_forward(self._session.forward)

    def _set_checkbox(self, on: bool) -> None:
        self.fully_convolutional.blockSignals(True)
        self.fully_convolutional.setChecked(on)
        self.fully_convolutional.blockSignals(False)

    def _on_checkbox(self, on: bool) -> None:
        if self.toggle is not None:
            self.toggle.set_on(on)

    def _show_controls(self, shown: bool) -> None:
        for widget in (self._opacity_label, self.opacity, self.whole):
            widget.setVisible(shown)
        self.bar.setVisible(shown or self.toggle is not None)
        self.canvas.set_box_drag(shown)    # a drag picks a region only over a class map; else it pans
        self.canvas.setToolTip(f"{HINT} (the middle button pans)" if shown else "")
        self.shown.emit(shown)

    # ---------------------------------------------------------------- the map
    def reset(self) -> None:
        """Forget the map at once (a new image or model): nothing stale stays drawn."""
        if self._jobs is not None and self._pending:
            self._jobs.cancel(JOB)      # a cancelled map never arrives: nothing stale later either
        self._pending = False
        self.view, self._rgba, self.solo = None, None, None
        self.canvas.clear_overlay()
        self.region_item.setVisible(False)
        self.legend.clear()
        self._show_controls(False)

    def _on_forward(self, summary) -> None:
        model, image = self._session.model, self._session.image
        if class_map_size(summary.layers) is None:
            self.reset()
            return
        if self._jobs is None or model is None or image is None or summary.image is not image:
            return
        workbench = self._workbench
        self._pending = True
        self._jobs.submit(JOB, lambda _context: workbench().class_map(model, image), on_done=self.show_map,
                          on_error=self._on_failed)

    def _on_failed(self, text: str) -> None:
        self._pending = False
        self.reset()
        self.canvas.setToolTip(f"No class map: {text}")

    def show_map(self, view: ClassMapView) -> None:
        """Draw a computed map, if it is still the current model's and image's."""
        model = self._session.model
        if model is None or view.model_token != model.token or view.image is not self._session.image:
            return
        self._pending = False
        self.view, self.solo = view, None
        self._rgba = coloured(view)
        self._draw()
        self.legend.set_entries(view.legend, view.colours)
        self._show_controls(True)
        self.readout.setText(HINT)
        self._on_selection(self._session.selection)

    def _crop_rect(self, box: tuple[float, float, float, float]) -> QRectF:
        """Fractions (y0, x0, y1, x1) of the crop as a rectangle in the photo's pixels."""
        height, width = self.canvas.image().shape[:2]
        ey0, ex0, ey1, ex1 = self.view.extent
        top, left = (ey0 + box[0] * (ey1 - ey0)) * height, (ex0 + box[1] * (ex1 - ex0)) * width
        bottom, right = (ey0 + box[2] * (ey1 - ey0)) * height, (ex0 + box[3] * (ex1 - ex0)) * width
        return QRectF(left, top, right - left, bottom - top)

    def _crop_fraction(self, y: float, x: float) -> tuple[float, float]:
        """A photo pixel as fractions of the model's crop (outside 0..1 when off the crop)."""
        height, width = self.canvas.image().shape[:2]
        ey0, ex0, ey1, ex1 = self.view.extent
        return (y / height - ey0) / (ey1 - ey0), (x / width - ex0) / (ex1 - ex0)

    def _draw(self) -> None:
        if self.view is None or self._rgba is None or self.canvas.image() is None:
            return
        self._rgba[..., 3] = shown_alpha(self.view, None if self.solo is None else {self.solo})
        self.canvas.show_overlay(self._rgba, self._crop_rect((0.0, 0.0, 1.0, 1.0)), self.opacity.value() / 100.0)

    def show_only(self, class_index: int | None) -> None:
        """Colour only `class_index` (None: every class)."""
        self.solo = class_index
        self.legend.show_solo(class_index)
        self._draw()

    # ---------------------------------------------------------------- what to explain
    def choose_class(self, class_index: int) -> None:
        """A legend click: that class alone, explained over the whole map; clicked again: all classes."""
        if self.solo == class_index:
            self.show_only(None)
            return
        self.show_only(class_index)
        self._session.select(class_index=class_index, region=None)

    def clear_region(self) -> None:
        """Explain the chosen class over the whole map."""
        self._session.select(region=None)

    def _on_clicked(self, y: float, x: float) -> None:
        if self.view is None:
            return
        cell = self.view.output_cell(*self._crop_fraction(y, x))
        if cell is not None:
            self._session.select(class_index=cell[0], region=cell[1])

    def _on_box(self, y0: float, x0: float, y1: float, x1: float) -> None:
        if self.view is None:
            return
        top, left = self._crop_fraction(y0, x0)
        bottom, right = self._crop_fraction(y1, x1)
        box = (max(top, 0.0), max(left, 0.0), min(bottom, 1.0), min(right, 1.0))
        chosen = self.view.box_class(box) if box[2] > box[0] and box[3] > box[1] else None
        if chosen is not None:
            self._session.select(class_index=chosen, region=box)

    def _on_hovered(self, y: float, x: float) -> None:
        if self.view is None:
            return
        found = self.view.at(*self._crop_fraction(y, x))
        if found is None:
            self.readout.setText("Outside the part of the photo the model saw")
            return
        names = {entry.class_index: entry.name for entry in self.view.legend}
        self.readout.setText(f"{names.get(found[0], found[0])}: {found[1]:.1%} at this pixel")

    def _on_selection(self, selection: Selection) -> None:
        region = selection.region
        self.whole.setEnabled(region is not None)
        if region is None or self.view is None or self.canvas.image() is None:
            self.region_item.setVisible(False)
            return
        self.region_item.setRect(self._crop_rect(region))
        self.region_item.setVisible(True)
