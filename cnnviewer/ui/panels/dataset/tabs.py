"""The Dataset panel's three tabs: a unit's top images, the input's neighbours, the folder's map."""

from __future__ import annotations

import html

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.dataset.display import OTHER, PALETTE, PICTURE_SIDE, colours_for, value_format
from cnnviewer.engine.dataset.embedding import available_methods
from cnnviewer.engine.dataset.names import LOGITS
from cnnviewer.ui.panels.dataset.map import MapView
from cnnviewer.ui.panels.dataset.widgets import Histogram, PictureGrid, pixmap


def _spin(value: int, low: int, high: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def _row(*widgets, stretch_after: int | None = None) -> QHBoxLayout:
    row = QHBoxLayout()
    for i, widget in enumerate(widgets):
        if isinstance(widget, str):
            widget = QLabel(widget)
        row.addWidget(widget, 1 if i == stretch_after else 0)
    return row


def _noted(text: str, note: str) -> str:
    """`text` with the note that the index is a paused build's part of the folder, when it is."""
    return f"{text} <i>({html.escape(note)})</i>" if note else text


class TopTab(QWidget):
    """Top-k images of the selected unit, their patches, and the unit's histogram."""

    picked = Signal(int, str, int, object)     # row, layer, channel, (y, x) of the maximum

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = None
        self.paused = ""            # set by the panel: 'paused: 64 of 130 indexed; …' for a checkpoint
        self.unit = QLabel("")
        self.unit.setWordWrap(True)
        self.k = _spin(9, 1, 100, "How many images (at most one entry per image)")
        self.add_layer_button = QPushButton("")
        self.add_layer_button.setVisible(False)
        self.neuron_button = QPushButton("")
        self.neuron_button.setToolTip("The index keeps each channel's maximum anywhere in its map: ranking by one "
                                      "position reads the folder's images again (up to this layer only)")
        self.neuron_button.setVisible(False)
        self.images = PictureGrid(PICTURE_SIDE)
        self.images.setToolTip("Click an image to make it the input, with this unit's neuron at its maximum selected")
        self.patches = PictureGrid(96)
        self.patches.setToolTip("The receptive field of the maximum, cut from each image (grey: beyond its edge)")
        self.histogram = Histogram()
        self.images.picked.connect(self._on_picked)
        self.patches.picked.connect(self._on_picked)
        pictures = QSplitter(Qt.Orientation.Horizontal)
        pictures.addWidget(self.images)
        pictures.addWidget(self.patches)
        pictures.setSizes([560, 340])
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(pictures)
        vertical.addWidget(self.histogram)
        vertical.setSizes([520, 150])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(_row(self.unit, self.add_layer_button, self.neuron_button, "k", self.k, stretch_after=0))
        layout.addWidget(vertical, 1)

    def clear(self, text: str) -> None:
        self.view = None
        self.unit.setText(text)
        self.add_layer_button.setVisible(False)
        self.neuron_button.setVisible(False)
        self.images.clear()
        self.patches.clear()
        self.histogram.clear_counts()

    def not_indexed(self, layer: str) -> None:
        self.clear(f"{layer} is not in this folder's index (it holds the top-level blocks and the logits).")
        self.add_layer_button.setText(f"Index {layer} too")
        self.add_layer_button.setVisible(True)

    def offer_neuron(self, position: tuple[int, int] | None) -> None:
        """Offer to rank by the selected neuron (None: no neuron, or no map to rank in)."""
        self.neuron_button.setVisible(position is not None)
        if position is not None:
            self.neuron_button.setText(f"Rank by neuron (y={position[0]}, x={position[1]})")
            self.neuron_button.setEnabled(True)

    def show_view(self, view, model) -> None:
        self.view = view
        self.add_layer_button.setVisible(False)
        name = f"class {view.channel} ({model.label(view.channel)})" if view.layer == LOGITS else \
            f"{view.layer} channel {view.channel}"
        field = f"; patches: its {view.field_size[0]:.0f}×{view.field_size[1]:.0f} px receptive field in the " \
                "model's input, cut from the original" if view.field_size else ""
        ranked = f"their value at (y={view.neuron[0]}, x={view.neuron[1]})" if view.neuron else \
            "their maximum anywhere in the map" if view.field_size else "their value"
        self.unit.setText(_noted(f"<b>{name}</b>: top {len(view.images)} of {view.images_indexed:,} images by "
                                 f"{ranked}{field}", self.paused))
        entries, patches = [], []
        style = value_format([hit.value for hit in view.images])
        for hit in view.images:
            tip = f"{hit.path}\nmaximum {hit.value:.4g} at (y={hit.position[0]}, x={hit.position[1]})"
            if hit.box is not None:
                tip += "\npatch x {:.0f}..{:.0f}, y {:.0f}..{:.0f} (original pixels)".format(*hit.box)
            value = format(hit.value, style)
            entries.append((hit.row, hit.picture, f"{value}\n{hit.path.name}", tip))
            if hit.patch is not None:
                patches.append((hit.row, hit.patch, value, tip))
        self.images.show_pictures(entries)
        self.patches.show_pictures(patches)
        self.patches.setVisible(bool(patches))
        threshold = view.images[-1].value if view.images else None
        self.histogram.show_counts(view.counts, view.edges, threshold)

    def _on_picked(self, row: int) -> None:
        if self.view is None:
            return
        hit = next((h for h in self.view.images if h.row == row), None)
        if hit is not None:
            self.picked.emit(row, self.view.layer, self.view.channel, hit.position)


class NeighboursTab(QWidget):
    """The folder's images most like the current input at a layer."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.paused = ""            # as TopTab.paused
        self.layer = QComboBox()
        self.layer.setToolTip("The feature space: pooled activations of this layer (default: the last before the logits)")
        self.k = _spin(9, 1, 100, "How many neighbours")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.grid = PictureGrid(PICTURE_SIDE)
        self.grid.setToolTip("Click an image to make it the input")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(_row("Layer", self.layer, "k", self.k, self.info, stretch_after=4))
        layout.addWidget(self.grid, 1)

    def set_layers(self, layers: list[str], default: str | None) -> None:
        keep = self.layer.currentText()
        self.layer.blockSignals(True)
        self.layer.clear()
        self.layer.addItems(layers)
        self.layer.setCurrentText(keep if keep in layers else (default or ""))
        self.layer.blockSignals(False)

    def show_found(self, found, image_name: str, layer: str) -> None:
        self.info.setText(_noted(f"Most like <b>{image_name}</b> at {layer} (cosine similarity of pooled features)",
                                 self.paused))
        self.grid.show_pictures([(hit.row, hit.picture, f"{hit.similarity:.3f}\n{hit.path.name}",
                                  f"{hit.path}\ncosine similarity {hit.similarity:.4f}") for hit in found])


class MapTab(QWidget):
    """A 2-D map of the folder at a layer; hover, click, box or lasso."""

    picked = Signal(int)
    wants_selection = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.index, self.result, self.model = None, None, None
        self.paused = ""            # as TopTab.paused
        self.layer = QComboBox()
        self.methods = QComboBox()
        for key, text in available_methods():
            self.methods.addItem(text, key)
        self.colour = QComboBox()
        self.colour.addItems(["predicted class", "k-means cluster"])
        self.colour.currentIndexChanged.connect(lambda _i: self._recolour())
        self.clusters = _spin(10, 2, 50, "How many k-means clusters (used when colouring by cluster)")
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.thumbnails = QCheckBox("Thumbnails")
        self.thumbnails.setChecked(True)
        self.compute_button = QPushButton("Compute map")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.info = QLabel("Compute a map of the folder: PCA to 50 dimensions, then t-SNE.")
        self.info.setWordWrap(True)
        self.view = MapView()
        self.view.picked.connect(self.picked)
        self.view.hovered.connect(self._on_hovered)
        self.view.selected.connect(self.wants_selection)
        self.thumbnails.toggled.connect(self.view.set_thumbnails_visible)
        self.preview = QLabel("Hover a point to see its image.")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumWidth(150)
        self.preview.setWordWrap(True)
        self.selection = PictureGrid(64)
        self.selection.picked.connect(self.picked)
        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(self.preview)
        side.addWidget(self.selection)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.view)
        split.addWidget(side)
        split.setSizes([640, 220])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(_row("Layer", self.layer, self.methods, QLabel(""), self.compute_button, self.cancel_button,
                              stretch_after=3))
        layout.addLayout(_row("Colour by", self.colour, "clusters", self.clusters, self.thumbnails, QLabel(""),
                              stretch_after=5))
        layout.addWidget(self.info)
        layout.addWidget(split, 1)
        layout.addWidget(self.legend)

    def method(self) -> str:
        return str(self.methods.currentData())

    def set_layers(self, layers: list[str], default: str | None) -> None:
        NeighboursTab.set_layers(self, layers, default)

    def set_index(self, index, model=None) -> None:
        """Another folder, model or weights: nothing of the old map stays (points, hover preview,
        selection, legend, the old map's summary line)."""
        self.index, self.model = index, model
        self.view.clear_map()
        self.result = None
        self.preview.clear()
        self.preview.setText("Hover a point to see its image.")
        self.preview.setToolTip("")
        self.selection.clear()
        self.legend.setText("")
        self.info.setText(_noted("Compute a map of the folder: PCA to 50 dimensions, then t-SNE.", self.paused))

    def busy(self, running: bool) -> None:
        self.compute_button.setEnabled(not running)
        self.cancel_button.setVisible(running)
        if running:
            self.info.setText("Computing the map… (the status bar shows how far)")

    def failed(self, text: str) -> None:
        self.busy(False)
        self.info.setText(f"No map: {text}")

    def show_map(self, result) -> None:
        found, shown, thumbs = result
        self.busy(False)
        self.result = (found, shown, thumbs)
        self._recolour()
        self.info.setText(_noted(f"{len(found.rows):,} images at {found.layer} ({found.method}, {found.seconds:.1f} s). "
                                 "Hover: image; click: make it the input; Shift+drag a box or Ctrl+drag a lasso to "
                                 "select.", self.paused))

    def _labels(self, found) -> tuple[np.ndarray, str]:
        if self.colour.currentIndex() == 0 and found.classes is not None:
            return found.classes, "class"
        return found.clusters, "cluster"

    def _recolour(self) -> None:
        if self.result is None:
            return
        found, shown, thumbs = self.result
        labels, kind = self._labels(found)
        colours, legend = colours_for(labels)
        self.view.show_map(found.rows, found.points, colours, thumbs, shown)
        self.view.set_thumbnails_visible(self.thumbnails.isChecked())
        entries = [(colour, f"{self._name(kind, label)} ({count})") for (label, count), colour in zip(legend, PALETTE)]
        others = len(labels) - sum(count for _label, count in legend)
        if others:
            entries.append((OTHER, f"other ({others})"))
        # Each swatch and its name are one unbreakable word; the legend wraps only between entries.
        self.legend.setText(" &nbsp; ".join(
            f"<span style='white-space: nowrap'><span style='color: rgb{tuple(colour)}'>■</span>&nbsp;"
            f"{html.escape(name).replace(' ', '&nbsp;')}</span>" for colour, name in entries))
        self._fit_legend()

    def _fit_legend(self) -> None:
        """As tall as its wrapped lines need: a second line is never cut off by the panel's bottom."""
        self.legend.setMinimumHeight(self.legend.heightForWidth(max(self.legend.width(), 100))
                                     if self.legend.text() else 0)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._fit_legend()

    def _name(self, kind: str, label: int) -> str:
        if kind == "class" and self.model is not None:
            return self.model.label(label)
        return f"{kind} {label}"

    def _on_hovered(self, row: int) -> None:
        if row < 0 or self.index is None or self.result is None:
            return
        found = self.result[0]
        where = int(np.searchsorted(found.rows, row))
        labels, kind = self._labels(found)
        self.preview.setPixmap(pixmap(self.index.thumbnails(np.array([row]))[0]).scaled(
            128, 128, Qt.AspectRatioMode.KeepAspectRatio))
        self.preview.setToolTip(f"{self.index.path(row)}\n{self._name(kind, int(labels[where]))}")
        self.info.setText(f"{self.index.path(row).name}: {self._name(kind, int(labels[where]))}")

    def show_selection(self, index, rows: np.ndarray, thumbs: np.ndarray) -> None:
        self.view.highlight(rows)
        self.selection.show_pictures([(int(row), thumb, index.path(row).name, str(index.path(row)))
                                      for row, thumb in zip(rows, thumbs)])
        self.info.setText(f"{len(rows)} images selected (shown on the right); click one to make it the input.")
