"""Receptive field: click a neuron, see its theoretical box and effective (gradient) field."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from cnnviewer.engine.attribution.target import box_positions
from cnnviewer.engine.session import Selection, Session
from cnnviewer.engine.views.colormaps import blend, colormap_table
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.gradient_options import class_map_output
from cnnviewer.ui.widgets.controls import on_screen
from cnnviewer.ui.widgets.image_canvas import ImageCanvas


def _overlay(display: np.ndarray, effective: np.ndarray) -> np.ndarray:
    """The crop, dimmed, with the effective field in 'inferno' where the gradient is strong."""
    heat = colormap_table("inferno")[np.clip(np.sqrt(effective) * 255, 0, 255).astype(np.uint8)]
    weight = 0.75 * np.sqrt(effective)[..., None]   # sqrt: faint tails stay visible
    return blend(display.astype(np.float32) * 0.6, heat, weight)   # the crop dimmed to 60 %


class ReceptiveFieldPanel(QWidget):
    """The layer's map to click neurons on, the input with both fields, and field size by depth."""

    def __init__(self, session: Session, jobs: UiJobs, workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench = session, jobs, workbench
        self.result = None
        self.title = QLabel("Select a convolutional layer, then click a neuron on its map.")
        self.title.setWordWrap(True)
        self.layer_canvas = ImageCanvas(self)
        self.layer_canvas.clicked.connect(self._on_layer_clicked)
        self.input_canvas = ImageCanvas(self)
        self.input_canvas.clicked.connect(self._on_input_clicked)
        self.box = pg.QtWidgets.QGraphicsRectItem()
        self.box.setPen(pg.mkPen((80, 220, 255), width=2, cosmetic=True))
        self.padding_box = pg.QtWidgets.QGraphicsRectItem()
        self.padding_box.setPen(pg.mkPen((80, 220, 255), width=1, style=Qt.PenStyle.DashLine, cosmetic=True))
        for item in (self.box, self.padding_box):
            item.setVisible(False)
            self.input_canvas.view.addItem(item)
        self.depth_plot = pg.PlotWidget(background=(30, 30, 34))
        self.depth_plot.setLabel("left", "receptive field", units="px")
        self.depth_plot.setLabel("bottom", "layer (depth order)")
        self.depth_curve = self.depth_plot.plot([], [], pen=pg.mkPen((86, 156, 214), width=2))
        self.depth_marker = self.depth_plot.plot([], [], pen=None, symbol="o", symbolBrush=(255, 90, 90))
        self.details = QLabel("")
        self.details.setWordWrap(True)
        canvases = QSplitter(Qt.Orientation.Horizontal)
        canvases.addWidget(self.layer_canvas)
        canvases.addWidget(self.input_canvas)
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(canvases)
        vertical.addWidget(self.depth_plot)
        vertical.setSizes([420, 160])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        layout.addWidget(vertical, 1)
        layout.addWidget(self.details)
        self._last_selection = session.selection
        self._pixel_wanted = session.selection.region is not None   # show the clicked pixel's field
        session.selection_changed.connect(self._on_selection_changed)
        session.model_changed.connect(self._on_model_changed)
        session.image_changed.connect(lambda _image: self.refresh())
        session.forward_changed.connect(self.show_forward)

    # ---------------------------------------------------------------- intent
    def _on_layer_clicked(self, y: float, x: float) -> None:
        if self._shows_output():        # the class map: the clicked position becomes the region
            _, height, width = self.result.layer_shape
            self._select_position(min(max(int(y), 0), height - 1), min(max(int(x), 0), width - 1))
            return
        self._session.select(neuron=(int(y), int(x)))

    def _shows_output(self) -> bool:
        return self.result is not None and self.result.layer == ""

    def _select_position(self, row: int, col: int) -> None:
        """One position of the class map as the session's region (fractions of the crop)."""
        _, height, width = self.result.layer_shape
        self._session.select(region=(row / height, col / width, (row + 1) / height, (col + 1) / width))

    def _on_input_clicked(self, y: float, x: float) -> None:
        """Pick the neuron whose field is centred nearest to the clicked input pixel."""
        if self.result is None:
            return
        field, (_, height, width) = self.result.field, self.result.layer_shape
        row = int(round((y - field.start[0]) / field.jump[0]))
        col = int(round((x - field.start[1]) / field.jump[1]))
        if self._shows_output():
            self._select_position(min(max(row, 0), height - 1), min(max(col, 0), width - 1))
            return
        self._session.select(neuron=(min(max(row, 0), height - 1), min(max(col, 0), width - 1)))

    def _on_selection_changed(self, selection: Selection) -> None:
        """The latest intent wins: a clicked class-map pixel shows its field until a layer, channel or
        neuron is chosen (it used to keep the pixel whatever was picked in Feature maps)."""
        before, self._last_selection = self._last_selection, selection
        if selection.region != before.region:
            self._pixel_wanted = selection.region is not None
        elif (selection.layer, selection.neuron, selection.channel) != (before.layer, before.neuron, before.channel):
            self._pixel_wanted = False
        self.refresh()

    def _on_model_changed(self, _model) -> None:
        self.result = None
        self.refresh_depth_plot()

    # ---------------------------------------------------------------- engine
    def show_forward(self, _summary) -> None:
        """A recorded pass exists for the current model and image: fields can be computed."""
        self.refresh()

    def _output_pixel(self) -> tuple[float, float, float, float] | None:
        """The session's region when it is one pixel of the model's class map (a click), else None."""
        region, shape = self._session.selection.region, class_map_output(self._session.forward)
        if region is None or shape is None or not self._pixel_wanted:
            return None
        y0, x0, y1, x1 = box_positions(region, *shape)
        return region if (y1 - y0, x1 - x0) == (1, 1) else None

    def refresh(self) -> None:
        """Compute the selected neuron's fields, or the clicked class-map pixel's (latest request wins)."""
        session = self._session
        model, image, selection, workbench = session.model, session.image, session.selection, self._workbench
        if self._session.forward is None or model is None or image is None or not on_screen(self):
            return
        pixel = self._output_pixel()
        if pixel is not None:
            self._jobs.submit("receptive_field", lambda _c: workbench().output_pixel_field(model, image, pixel),
                              on_done=self.show_result, on_error=self._on_failed)
            return
        if not selection.layer:
            return

        def work(_context):
            return workbench().neuron_field(model, image, selection.layer, selection.neuron, selection.channel)

        self._jobs.submit("receptive_field", work, on_done=self.show_result, on_error=self._on_failed)

    def refresh_depth_plot(self) -> None:
        """Field size of every layer in depth order (from the model summary)."""
        model, workbench = self._session.model, self._workbench
        if model is None:
            return
        self._jobs.submit("receptive_field_depth", lambda _c: workbench().summary(model),
                          on_done=self._show_depth)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override: compute only when looked at
        super().showEvent(event)
        self.refresh()
        if self.depth_curve.xData is None or len(self.depth_curve.xData) == 0:
            self.refresh_depth_plot()

    # ---------------------------------------------------------------- drawing
    def _on_failed(self, message: str) -> None:
        self.result = None
        self.layer_canvas.clear()
        self.box.setVisible(False)
        self.padding_box.setVisible(False)
        self.title.setText(message)

    def show_result(self, result) -> None:
        """Draw a (NeuronField, layer picture) pair."""
        field_result, picture = result
        self.result = field_result
        self.layer_canvas.show_image(picture, keep_view=True)
        y, x = field_result.neuron
        self.layer_canvas.mark(y, x, 1, 1)
        self.input_canvas.show_image(_overlay(field_result.display, field_result.effective), keep_view=True)
        top, left, bottom, right = field_result.box
        size = field_result.display.shape[0]
        inside = (max(top, 0), max(left, 0), min(bottom, size), min(right, size))
        self.padding_box.setRect(QRectF(left, top, right - left, bottom - top))
        self.box.setRect(QRectF(inside[1], inside[0], inside[3] - inside[1], inside[2] - inside[0]))
        whole = field_result.field.whole
        self.box.setVisible(not whole)
        self.padding_box.setVisible(not whole and inside != (top, left, bottom, right))
        # the dashed part on zero padding stays in view (the input is fitted with it)
        self.input_canvas.fit_also(self.padding_box.rect() if self.padding_box.isVisible() else None)
        area = (bottom - top) * (right - left)
        on_padding = 1 - (inside[2] - inside[0]) * (inside[3] - inside[1]) / area if area else 0
        extent = field_result.effective_extent
        if field_result.layer == "":
            self._describe_output(field_result, on_padding)
            return
        channel = "all channels" if field_result.channel is None else f"channel {field_result.channel}"
        self.title.setText(f"<b>{field_result.layer}</b> neuron (y={y}, x={x}), {channel}. "
                           "Click the map (left) or the input (right) to move it.")
        size_text = "the whole image" if whole else \
            f"{_n(field_result.field.size[0])}×{_n(field_result.field.size[1])} px, jump {_n(field_result.field.jump[0])}"
        effective_text = f"{extent[2] - extent[0]}×{extent[3] - extent[1]} px" if extent else "nothing (zero gradient)"
        self.details.setText(
            f"Theoretical field (box): {size_text}" + (f", {on_padding:.0%} on zero padding (dashed)" if on_padding > 0 else "")
            + f". Effective field (|∂a/∂x|, heat): non-zero over {effective_text}. "
            f"Gradient in {field_result.milliseconds:.0f} ms.")
        self._mark_depth(field_result.layer)

    def _describe_output(self, field_result, on_padding: float) -> None:
        """Title and details for the clicked class-map pixel (Workbench.output_pixel_field)."""
        model = self._session.model
        (y, x), (_, height, width) = field_result.neuron, field_result.layer_shape
        index = field_result.channel
        name = f" ({model.categories[index]})" if model is not None and 0 <= index < len(model.categories) else ""
        extent = field_result.effective_extent
        top, left, bottom, right = field_result.box
        self.title.setText(f"<b>Output pixel</b> (row {y}, column {x}) of the {height}×{width} class map, class "
                           f"{index}{name}. Click the map (left) or the input (right) to move it.")
        effective_text = f"{extent[2] - extent[0]}×{extent[3] - extent[1]} px" if extent else "nothing (zero gradient)"
        context = (" Global pooling (gates, image pooling) also feeds it a value from the whole image; the box is "
                   "what it sees with those held fixed." if field_result.field.context else "")
        self.details.setText(
            f"Theoretical field (box): {_n(bottom - top)}×{_n(right - left)} px of the input, through every "
            f"convolution and upsampling to this pixel.{context} Effective field (|∂score/∂x|, heat): non-zero "
            f"over {effective_text}. Gradient in {field_result.milliseconds:.0f} ms.")

    def _show_depth(self, summary) -> None:
        self._depth_names = [row.name for row in summary.rows if not row.rf_whole]
        sizes = [row.rf_size[0] for row in summary.rows if not row.rf_whole]
        self.depth_curve.setData(list(range(len(sizes))), sizes)
        self._depth_sizes = sizes
        if self.result is not None:
            self._mark_depth(self.result.layer)

    def _mark_depth(self, layer: str) -> None:
        names = getattr(self, "_depth_names", [])
        matches = [i for i, name in enumerate(names) if name == layer or name.startswith(f"{layer}.")]
        if matches:
            index = matches[-1]
            self.depth_marker.setData([index], [self._depth_sizes[index]])


def _n(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:.1f}"
