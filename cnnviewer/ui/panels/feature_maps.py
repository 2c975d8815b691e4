"""Feature maps: a layer tree and all channels of the chosen layer as one mosaic."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSizePolicy,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.session import Selection, Session
from cnnviewer.engine.views.colormaps import COLORMAPS, colormap_table
from cnnviewer.engine.views.features import (
    FeatureMapOptions,
    FeatureMapView,
    normalise,
    overlay,
)
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.widgets.image_canvas import ImageCanvas
from cnnviewer.ui.widgets.interventions import ask_factor


class LayerTree(QTreeWidget):
    """Modules by dotted name, nested as in the model, with type and output shape."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHeaderLabels(["Layer", "Type", "Output"])
        self.setUniformRowHeights(True)
        self.setColumnWidth(0, 130)
        self.setColumnWidth(1, 120)
        self.items: dict[str, QTreeWidgetItem] = {}

    def set_layers(self, layers) -> None:
        """Rebuild from a tuple of LayerInfo (root first)."""
        self.clear()
        self.items = {}
        for info in layers:
            if info.name == "":
                continue
            parent_name = info.name.rpartition(".")[0]
            parent = self.items.get(parent_name, self.invisibleRootItem())
            shape = "×".join(str(d) for d in info.output_shape) if info.output_shape else "—"
            item = QTreeWidgetItem(parent, [info.name.rpartition(".")[2], info.type_name, shape])
            item.setData(0, Qt.ItemDataRole.UserRole, info.name)
            item.setToolTip(0, info.name)
            if info.output_shape is None:
                item.setDisabled(True)
            self.items[info.name] = item

    def select_layer(self, name: str | None) -> None:
        """Highlight and reveal `name` without emitting a new user selection."""
        item = self.items.get(name or "")
        if item is not None and self.currentItem() is not item:
            self.blockSignals(True)
            self.setCurrentItem(item)
            self.scrollToItem(item)
            self.blockSignals(False)


class FeatureMapsPanel(QWidget):
    """All channels of one layer; hover reads values, click enlarges and overlays; Ctrl/Shift-click
    picks several, right-click knocks them out."""

    # layer, channels, mode ('zero' | 'mean' | 'scale'), factor, over ('image' | 'folder'): Controller.request_knockout
    knockout_requested = Signal(str, object, str, float, str)

    def __init__(self, session: Session, jobs: UiJobs, workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench = session, jobs, workbench
        self.picked: list[int] = []           # channels picked with Ctrl/Shift-click (for a knock-out)
        self._pick_marks: list = []
        self.view: FeatureMapView | None = None
        self._display: np.ndarray | None = None
        self._tree_token: int | None = None   # the model whose layers the tree lists
        self._logit_layers: set[str] = set()   # layers whose output is the model's (a click picks a class)

        self.tree = LayerTree(self)
        self.tree.currentItemChanged.connect(self._on_tree_item_changed)
        self.tree.setToolTip("Choose a layer: every panel follows (blocks show their output)")
        self.normalisation = _combo({"per channel": "channel", "per layer": "layer"})
        self.colormap = _combo({name: name for name in COLORMAPS})
        self.sort = _combo({"index": "index", "mean activation": "mean", "max activation": "max"})
        for combo, tip in ((self.normalisation, "per channel: each channel stretched to its own min..max "
                                                "(shows every pattern); per layer: one scale for all (shows "
                                                "which channels fire strongly)"),
                           (self.colormap, "Colours for low to high activation"),
                           (self.sort, "Order of the tiles: channel index, or strongest first by mean or max")):
            combo.setToolTip(tip)
            combo.currentIndexChanged.connect(self.refresh)
        self.canvas = ImageCanvas(self)
        self.canvas.hovered.connect(self._on_canvas_hovered)
        self.canvas.clicked.connect(self._on_canvas_clicked)
        self.canvas.left.connect(lambda: self.readout.setText(self._summary_text()))
        self.canvas.reshaped.connect(self.refresh)   # re-arrange the tiles to fill the new shape
        self.canvas.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.canvas.customContextMenuRequested.connect(self._on_context_menu)
        self.readout = QLabel("")
        self.readout.setWordWrap(True)   # long statistics must not widen the dock
        self.channel_canvas = ImageCanvas(self)
        self.channel_canvas.clicked.connect(lambda y, x: self._session.select(neuron=(int(y), int(x))))
        self.overlay_canvas = ImageCanvas(self)
        self.channel_label = QLabel("")
        self.channel_label.setWordWrap(True)
        self.channel_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

        controls = QHBoxLayout()
        for text, widget in (("Normalise", self.normalisation), ("Colormap", self.colormap),
                             ("Sort", self.sort)):
            controls.addWidget(QLabel(text))
            controls.addWidget(widget)
        controls.addStretch(1)
        detail = QSplitter(Qt.Orientation.Horizontal)
        detail.addWidget(self.channel_canvas)
        detail.addWidget(self.overlay_canvas)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addLayout(controls)
        self._vertical = vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(self.canvas)
        self.detail = detail_box = QWidget()
        detail_box.setVisible(False)   # shown once a channel is chosen
        detail_layout = QVBoxLayout(detail_box)
        detail_layout.setContentsMargins(0, 0, 0, 0)
        detail_layout.addWidget(self.channel_label)
        detail_layout.addWidget(detail, 1)     # the pictures take the half, not a band around the caption
        vertical.addWidget(detail_box)
        vertical.setSizes([560, 220])
        vertical.setStretchFactor(0, 3)
        vertical.setStretchFactor(1, 1)
        right_layout.addWidget(vertical, 1)
        right_layout.addWidget(self.readout)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.tree)
        splitter.addWidget(right)
        splitter.setSizes([330, 620])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

        session.selection_changed.connect(self._on_selection_changed)
        session.forward_changed.connect(self.show_forward)
        session.forward_failed.connect(self.show_failure)

    # ---------------------------------------------------------------- inputs
    def show_forward(self, summary) -> None:
        """A new forward pass is ready: redraw; rebuild the tree only for a new model."""
        if summary.model_token != self._tree_token:
            self.tree.set_layers(summary.layers)
            self._tree_token = summary.model_token
            self._logit_layers = logit_layers(summary.layers)
        self.tree.select_layer(self._session.selection.layer)
        self.refresh()

    def show_failure(self, message: str) -> None:
        """The model could not run: show nothing stale, say why."""
        self._jobs.cancel("feature_maps")
        self._tree_token = None
        self.tree.clear()
        self._on_view_failed(message)

    def _on_selection_changed(self, selection: Selection) -> None:
        self.tree.select_layer(selection.layer)
        if self.view is not None and self.view.layer == selection.layer:
            self._show_channel(selection.channel)
        else:
            self.refresh()

    def _on_tree_item_changed(self, item: QTreeWidgetItem | None, _previous) -> None:
        if item is not None:
            self._session.select(layer=item.data(0, Qt.ItemDataRole.UserRole))

    def _on_canvas_clicked(self, y: float, x: float) -> None:
        if self.view is None:
            return
        hit = self._hit(y, x)
        if hit is None:
            return
        modifiers = QApplication.keyboardModifiers()
        if modifiers & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier):
            self.toggle_pick(hit[0])
            return
        self.picked = [hit[0]]
        self._mark_picked()
        model = self._session.model
        if self.view.layer in self._logit_layers and model is not None and hit[0] < len(model.categories):
            self._session.select(channel=hit[0], class_index=hit[0])   # a logit: that class, everywhere
        else:
            self._session.select(channel=hit[0])

    def _hit(self, y: float, x: float):
        """The tile under (y, x); a click on the gap after a tile takes that tile (1x1 tiles are
        one pixel wide with a one-pixel gap: most clicks on a logit mosaic landed between cells)."""
        layout = self.view.layout
        for dy, dx in ((0, 0), (-layout.gap, 0), (0, -layout.gap), (-layout.gap, -layout.gap)):
            hit = layout.channel_at(y + dy, x + dx)
            if hit is not None:
                return hit
        return None

    # ---------------------------------------------------------------- knock-outs
    def toggle_pick(self, channel: int) -> None:
        """Add `channel` to the picked tiles, or take it out (Ctrl/Shift-click)."""
        if not self.picked and self._session.selection.channel is not None:
            self.picked = [self._session.selection.channel]
        if channel in self.picked:
            self.picked.remove(channel)
        else:
            self.picked.append(channel)
        self._mark_picked()
        self.readout.setText(f"{len(self.picked)} channel{'s' * (len(self.picked) != 1)} picked: "
                             f"{', '.join(map(str, self.picked[:12]))}{'…' if len(self.picked) > 12 else ''}"
                             " — right-click to knock them out")

    def _mark_picked(self) -> None:
        """Outline every picked tile (the selected one keeps its own red outline)."""
        for item in self._pick_marks:
            self.canvas.view.removeItem(item)
        self._pick_marks = []
        if self.view is None or len(self.picked) < 2:
            return
        layout = self.view.layout
        for channel in self.picked:
            if 0 <= channel < self.view.values.shape[0]:
                y, x = layout.tile_origin(layout.tile_of_channel(channel))
                item = pg.QtWidgets.QGraphicsRectItem(x - 0.5, y - 0.5, layout.tile_width + 1, layout.tile_height + 1)
                item.setPen(pg.mkPen((255, 170, 40), width=2, cosmetic=True))
                self.canvas.view.addItem(item)
                self._pick_marks.append(item)

    def _on_context_menu(self, pos: QPoint) -> None:
        if self.view is None:
            return
        pixel = self.canvas._pixel(self.canvas.mapToScene(pos))
        hit = self._hit(*pixel) if pixel is not None else None
        if hit is None:
            return
        channels = list(self.picked) if hit[0] in self.picked else [hit[0]]
        self.knockout_menu(channels).exec(self.canvas.viewport().mapToGlobal(pos))

    def knockout_menu(self, channels: list[int]) -> QMenu:
        """'Knock out' with its four choices for `channels` of the shown layer."""
        layer = self.view.layer if self.view is not None else ""
        menu = QMenu(self)
        shown = ", ".join(map(str, channels[:8])) + ("…" if len(channels) > 8 else "")
        sub = menu.addMenu(f"Knock out channel{'s' * (len(channels) != 1)} {shown}")
        sub.setToolTipsVisible(True)
        for text, mode, over, tip in (
                ("zero", "zero", "image", "Every panel recomputes with these channels set to 0"),
                ("mean over this image", "mean", "image", "Each channel becomes its mean over this image's map"),
                ("mean over the indexed folder", "mean", "folder", "Each channel becomes its mean over the "
                 "folder indexed in the Dataset panel (needs this layer indexed)")):
            action = sub.addAction(text)
            action.setToolTip(tip)
            action.triggered.connect(lambda _c=False, m=mode, o=over: self.knock_out(channels, m, over=o))
        scale = sub.addAction("scale by…")
        scale.setToolTip("Multiply these channels by a factor (0.5 halves them, 2 doubles them)")
        scale.triggered.connect(lambda _c=False: (factor := ask_factor(self, "the channels")) is not None
                                and self.knock_out(channels, "scale", factor))
        sub.setEnabled(bool(layer) and bool(channels))
        return menu

    def knock_out(self, channels: list[int], mode: str = "zero", factor: float = 0.0, over: str = "image") -> None:
        """Ask for a knock-out of `channels` of the shown layer (the controller builds it)."""
        if self.view is not None and channels:
            self.knockout_requested.emit(self.view.layer, list(channels), mode, float(factor), over)
            self.picked = []
            self._mark_picked()

    def _on_canvas_hovered(self, y: float, x: float) -> None:
        if self.view is None:
            return
        hit = self._hit(y, x)
        if hit is None:
            self.readout.setText(self._summary_text())
            return
        channel, row, col = hit
        value = float(self.view.values[channel, row, col])
        self.readout.setText(f"channel {channel}  (y={row}, x={col})  value {value:.4g}   "
                             f"mean {self.view.channel_mean[channel]:.3g}  max {self.view.channel_max[channel]:.3g}")

    # ---------------------------------------------------------------- drawing
    def options(self):
        """Current display options as the engine's FeatureMapOptions."""
        return FeatureMapOptions(self.normalisation.currentData(), self.colormap.currentData(),
                                 self.sort.currentData(), self.canvas.aspect())

    def refresh(self) -> None:
        """Ask the engine for the current layer's mosaic (latest request wins)."""
        session, layer = self._session, self._session.selection.layer
        if session.forward is None or session.model is None or session.image is None or not layer:
            return
        model, image, options, workbench = session.model, session.image, self.options(), self._workbench

        def work(_context):
            return workbench().feature_maps(model, image, layer, options), workbench().display(model, image)

        self._jobs.submit("feature_maps", work, on_done=self._on_view_ready,
                          on_error=self._on_view_failed)

    def _on_view_ready(self, result) -> None:
        view, display = result
        same_layer = self.view is not None and self.view.layer == view.layer
        self.view, self._display = view, display
        if not same_layer:
            self.picked = []
        self._mark_picked()
        self.canvas.show_image(view.mosaic, keep_view=same_layer)
        self.readout.setText(self._summary_text())
        self._show_channel(self._session.selection.channel)

    def _on_view_failed(self, message: str) -> None:
        self.view = None
        self.canvas.clear()
        self.readout.setText(message)

    def _show_channel(self, channel: int | None) -> None:
        view = self.view
        if view is None or channel is None or not 0 <= channel < view.values.shape[0]:
            self.canvas.unmark()
            self.channel_canvas.clear()
            self.overlay_canvas.clear()
            self.detail.setVisible(False)
            return
        layout = view.layout
        y, x = layout.tile_origin(layout.tile_of_channel(channel))
        self.canvas.mark(y, x, layout.tile_height, layout.tile_width)
        values = view.values[channel]
        table = colormap_table(self.colormap.currentData())
        self.channel_canvas.show_image(np.ascontiguousarray(table[normalise(values[None], "channel")[0]]))
        if self._display is not None:
            self.overlay_canvas.show_image(overlay(self._display, values))
        if not self.detail.isVisible():   # the enlarged channel gets as much room as the mosaic
            total = sum(self._vertical.sizes()) or self._vertical.height()
            self.detail.setVisible(True)
            self._vertical.setSizes([total // 2, total - total // 2])
        self.channel_label.setText(f"{view.layer} — channel {channel}: {values.shape[0]}×{values.shape[1]}, "
                                   f"min {values.min():.3g}, max {values.max():.3g}, mean {values.mean():.3g}")

    def _summary_text(self) -> str:
        if self.view is None:
            return ""
        count, height, width = self.view.values.shape
        text = f"{self.view.layer}: {count} channels of {height}×{width}"
        stats = self.view.stats
        if stats is not None:
            text += (f"; min {stats.minimum:.3g}, max {stats.maximum:.3g}, mean {stats.mean:.3g}, "
                     f"std {stats.std:.3g}, zeros {stats.zero_fraction:.0%}, dead channels {stats.dead_channels}")
        return text + (". Hover for values, click to enlarge; Ctrl/Shift-click picks several, "
                       "right-click knocks them out.")


def logit_layers(layers) -> set[str]:
    """Names of the layers whose output is the whole model's (a vector): their channels are classes."""
    root = next((info for info in layers if info.name == ""), None)
    if root is None or root.output_shape is None or len(root.output_shape) != 1:
        return set()
    return {info.name for info in layers if info.name and info.output_shape == root.output_shape}


def _combo(choices: dict[str, str]) -> QComboBox:
    combo = QComboBox()
    for text, value in choices.items():
        combo.addItem(text, value)
    return combo
