"""Filters: first-layer kernels as colour images, deeper kernels as gray grids."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from cnnviewer.engine.features import FilterView
from cnnviewer.engine.session import Selection, Session
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.widgets.image_canvas import ImageCanvas


class FiltersPanel(QWidget):
    """Kernels of the selected convolution (or the model's first one)."""

    def __init__(self, session: Session, jobs: UiJobs, workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench = session, jobs, workbench
        self.view: FilterView | None = None
        self.title = QLabel("")
        self.title.setWordWrap(True)
        self.channel = QSpinBox()
        self.channel.setRange(0, 0)
        self.channel.setPrefix("output channel ")
        self.channel.valueChanged.connect(self._on_channel_spin)
        self.canvas = ImageCanvas(self)
        self.canvas.clicked.connect(self._on_canvas_clicked)
        self.canvas.hovered.connect(self._on_canvas_hovered)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.channel)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.stats)
        session.selection_changed.connect(self._on_selection_changed)
        session.model_changed.connect(lambda _model: self.refresh())

    def _on_selection_changed(self, _selection: Selection) -> None:
        self.refresh()

    def _on_channel_spin(self, value: int) -> None:
        if self.view is not None and not self.view.rgb:
            self._session.select(channel=value)

    def _on_canvas_clicked(self, y: float, x: float) -> None:
        if self.view is not None and self.view.rgb:
            hit = self.view.layout.channel_at(y, x)
            if hit is not None:   # a first-layer filter is that layer's output channel
                self._session.select(layer=self.view.layer, channel=hit[0])

    def _on_canvas_hovered(self, y: float, x: float) -> None:
        if self.view is None:
            return
        hit = self.view.layout.channel_at(y, x)
        if hit is not None:
            kind = "filter" if self.view.rgb else "input channel"
            self.stats.setToolTip(f"{kind} {hit[0]}")
            self.canvas.setToolTip(f"{kind} {hit[0]}")

    def refresh(self) -> None:
        """Ask the engine for the kernels of the current layer."""
        model = self._session.model
        if model is None:
            return
        selection, workbench = self._session.selection, self._workbench

        def work(_context):
            return workbench().filters(model, selection.layer, selection.channel)

        self._jobs.submit("filters", work, on_done=self.show_view,
                          on_error=lambda message: self.title.setText(message))

    def show_view(self, view: FilterView | None) -> None:
        """Draw a FilterView (None: the model has no convolution)."""
        self.view = view
        if view is None:
            self.canvas.clear()
            self.title.setText("This model has no 2-D convolution.")
            self.stats.setText("")
            return
        self.canvas.show_image(view.mosaic)
        stats = view.stats
        shape = "×".join(str(d) for d in stats.shape)
        if view.rgb:
            self.title.setText(f"<b>{view.layer}</b>: {stats.shape[0]} first-layer filters "
                               f"({stats.shape[2]}×{stats.shape[3]}×3) as colour images")
            channel = self._session.selection.channel
            if channel is not None and self._session.selection.layer == view.layer \
                    and 0 <= channel < view.layout.count:
                y, x = view.layout.tile_origin(view.layout.tile_of_channel(channel))
                self.canvas.mark(y, x, view.layout.tile_height, view.layout.tile_width)
            else:
                self.canvas.unmark()
        else:
            self.canvas.unmark()
            self.title.setText(f"<b>{view.layer}</b>: output channel {view.output_channel}, "
                               f"kernel per input channel ({stats.shape[1]}, gray: 0 = mid-gray)")
        self.channel.blockSignals(True)
        self.channel.setEnabled(not view.rgb)
        self.channel.setRange(0, stats.shape[0] - 1)
        self.channel.setValue(view.output_channel or 0)
        self.channel.blockSignals(False)
        self.stats.setText(f"weights {shape} = {stats.count:,}  mean {stats.mean:.3g}  std {stats.std:.3g}  "
                           f"min {stats.minimum:.3g}  max {stats.maximum:.3g}  near zero {stats.near_zero:.1%}")
