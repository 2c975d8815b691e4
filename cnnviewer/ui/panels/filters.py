"""Filters: first-layer kernels as colour images, the selected conv's kernels as a gray grid."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.session import Selection, Session
from cnnviewer.engine.views.filters import FilterView
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.widgets.image_canvas import ImageCanvas


def _stats_text(view: FilterView) -> str:
    stats = view.stats
    shape = "×".join(str(d) for d in stats.shape)
    return (f"weights {shape} = {stats.count:,}   mean {stats.mean:.3g}   std {stats.std:.3g}   "
            f"min {stats.minimum:.3g}   max {stats.maximum:.3g}   |w| < 0.1% of max: {stats.near_zero:.1%}")


class FilterSection(QWidget):
    """A title, one mosaic canvas and a statistics line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("")
        self.title.setWordWrap(True)
        self.canvas = ImageCanvas(self)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        self.header = QHBoxLayout()
        self.header.addWidget(self.title, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.header)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.stats)


class FiltersPanel(QWidget):
    """First-layer filters (always) and the selected layer's kernels."""

    def __init__(self, session: Session, jobs: UiJobs, workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench = session, jobs, workbench
        self._local_channel: int | None = None        # for a conv whose channels are not the layer's
        self.view: FilterView | None = None            # first layer
        self.selected_view: FilterView | None = None   # the selected layer's conv, if deeper
        self.first = FilterSection(self)
        self.first.canvas.clicked.connect(self._on_first_clicked)
        self.first.canvas.hovered.connect(self._on_first_hovered)
        self.selected = FilterSection(self)
        self.channel = QSpinBox()
        self.channel.setPrefix("output channel ")
        self.channel.valueChanged.connect(self._on_channel_spin)
        self.channel.setToolTip("Whose kernels to show: one output channel of the selected conv "
                                "(the same channel as in Feature maps when they match)")
        self.selected.header.addWidget(self.channel)
        self.selected.canvas.hovered.connect(self._on_selected_hovered)
        for section in (self.first, self.selected):   # re-arrange the kernels to fill a reshaped panel
            section.canvas.reshaped.connect(self.refresh)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(self.first)
        splitter.addWidget(self.selected)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)
        session.selection_changed.connect(self._on_selection_changed)
        session.model_changed.connect(lambda _model: self.refresh())
        session.forward_changed.connect(self._on_forward_changed)

    def _on_forward_changed(self, _summary) -> None:
        if self.view is None:   # a model whose layer shapes were unknown until it ran
            self.refresh()

    def _on_selection_changed(self, _selection: Selection) -> None:
        self._local_channel = None
        self.refresh()

    def _on_channel_spin(self, value: int) -> None:
        view = self.selected_view
        if view is None:
            return
        if view.matches_layer:   # the same channel as in the feature maps: share it
            self._session.select(channel=value)
        else:                    # e.g. a concatenating block: this conv's own channel, kept here
            self._local_channel = value
            self.refresh()

    def _on_first_clicked(self, y: float, x: float) -> None:
        if self.view is not None:
            hit = self.view.layout.channel_at(y, x)
            if hit is not None:   # a first-layer filter is that layer's output channel
                self._session.select(layer=self.view.layer, channel=hit[0])

    def _on_first_hovered(self, y: float, x: float) -> None:
        hit = self.view.layout.channel_at(y, x) if self.view is not None else None
        self.first.canvas.setToolTip(f"filter {hit[0]} (click to see its feature map)" if hit else "")

    def _on_selected_hovered(self, y: float, x: float) -> None:
        view = self.selected_view
        hit = view.layout.channel_at(y, x) if view is not None else None
        self.selected.canvas.setToolTip(f"input channel {hit[0]}" if hit else "")

    def refresh(self) -> None:
        """Ask the engine for the kernels of the first and the current layer."""
        model = self._session.model
        if model is None:
            return
        selection, workbench = self._session.selection, self._workbench
        channel = self._local_channel if self._local_channel is not None else selection.channel
        aspects = (self.first.canvas.aspect(), self.selected.canvas.aspect())

        def work(_context):
            return workbench().filters(model, selection.layer, channel, aspects)

        self._jobs.submit("filters", work, on_done=self.show_views,
                          on_error=lambda message: self.first.title.setText(message))

    def show_views(self, views: tuple[FilterView | None, FilterView | None]) -> None:
        """Draw (first-layer view, selected-layer view)."""
        self.view, self.selected_view = views
        self._show_first(self.view)
        self._show_selected(self.selected_view)

    def _show_first(self, view: FilterView | None) -> None:
        if view is None:
            self.first.canvas.clear()
            self.first.title.setText("This model has no 2-D convolution.")
            self.first.stats.setText("")
            return
        self.first.canvas.show_image(view.mosaic)
        shape = view.stats.shape
        kind = "as colour images" if view.rgb else "(each one's kernel on input channel 0, gray)"
        self.first.title.setText(f"<b>First layer</b> {view.layer}: {shape[0]} filters "
                                 f"{shape[2]}×{shape[3]}×{shape[1]} {kind}")
        self.first.stats.setText(_stats_text(view))
        selection = self._session.selection
        if selection.layer == view.layer and selection.channel is not None and 0 <= selection.channel < view.layout.count:
            y, x = view.layout.tile_origin(view.layout.tile_of_channel(selection.channel))
            self.first.canvas.mark(y, x, view.layout.tile_height, view.layout.tile_width)
        else:
            self.first.canvas.unmark()

    def _show_selected(self, view: FilterView | None) -> None:
        self.channel.setEnabled(view is not None)
        if view is None:
            self.selected.canvas.clear()
            self.selected.stats.setText("")
            self.selected.title.setText("Select a deeper convolution (a layer or block in Feature maps) "
                                        "to see its kernels for one output channel.")
            return
        self.selected.canvas.show_image(view.mosaic)
        shape = view.stats.shape
        kernels = "kernel" if shape[1] == 1 else "kernels"
        own = "" if view.matches_layer else f" (this conv's channels are not the layer's {self._session.selection.layer})"
        self.selected.title.setText(f"<b>{view.layer}</b>: output channel {view.output_channel}'s "
                                    f"{shape[1]} {kernels} of {shape[2]}×{shape[3]} (gray, 0 = mid-gray){own}")
        self.selected.stats.setText(_stats_text(view))
        self.channel.blockSignals(True)
        self.channel.setRange(0, shape[0] - 1)
        self.channel.setValue(view.output_channel or 0)
        self.channel.blockSignals(False)
