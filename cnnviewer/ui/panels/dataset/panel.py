"""Dataset: what makes a unit fire, across a folder of images.

Drop a folder (or File > Open image folder): it is indexed in the background, in short slices on
the job thread, so the other panels keep working; Cancel checkpoints it and Resume (or opening the
folder again, days later) goes on from there. Then, for the unit selected anywhere in the app: its
top images with their receptive-field patches and its histogram over the folder; the current
input's nearest neighbours; and a map of the folder. Clicking any image makes it the input.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.dataset.names import LOGITS
from cnnviewer.engine.session import Selection, Session
from cnnviewer.ui import file_dialogs
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.dataset.evaluation import EvaluationTab
from cnnviewer.ui.panels.dataset.indexing import SLICE_SECONDS, START, IndexingMixin
from cnnviewer.ui.panels.dataset.tabs import MapTab, NeighboursTab, TopTab
from cnnviewer.ui.widgets.controls import on_screen


def _intact(model):
    """The model the index belongs to: knock-outs (experiments.knockout) are not a new model for indexing."""
    return model.original if model is not None else None


class DatasetPanel(IndexingMixin, QWidget):
    """A folder's index and its three views, for the session's model."""

    def __init__(self, session: Session, jobs: UiJobs, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self.folder: Path | None = None
        self.index = None          # DatasetIndex (numpy only; read on the job thread)
        self._indexed_model = _intact(session.model)   # whose index: the same with or without knock-outs
        self._build = None         # IndexBuild in progress (job thread only)
        self._extra_layers: list[str] = []
        self.setAcceptDrops(True)
        self.setToolTip("Drop a folder of images here to index it")
        self.folder_label = QLabel("Drop a folder of images here, or use File > Open image folder.")
        self.folder_label.setWordWrap(True)
        self.open_button = QPushButton("Open folder…")
        self.open_button.clicked.connect(self._on_open_clicked)
        self.index_button = QPushButton("Index")
        self.index_button.clicked.connect(lambda: self.start_indexing())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_indexing)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.skipped_button = QPushButton("")
        self.skipped_button.setCheckable(True)
        self.skipped_button.setFlat(True)
        self.skipped_list = QListWidget()
        self.skipped_list.setMaximumHeight(110)
        self.skipped_button.toggled.connect(self.skipped_list.setVisible)
        for widget in (self.index_button, self.cancel_button, self.progress, self.skipped_button, self.skipped_list):
            widget.setVisible(False)
        self.tabs = QTabWidget()
        self.top_tab, self.neighbours_tab, self.map_tab = TopTab(), NeighboursTab(), MapTab()
        self.tabs.addTab(self.top_tab, "Top images")
        self.tabs.addTab(self.neighbours_tab, "Neighbours")
        self.tabs.addTab(self.map_tab, "Map")
        self.evaluation_tab = EvaluationTab(session, jobs, controller.workbench, lambda: self.index)
        self.tabs.addTab(self.evaluation_tab, "Evaluate attribution")
        self.top_tab.clear(START)          # before any folder: how to start, not "being looked for"
        self.tabs.currentChanged.connect(lambda _i: self.refresh())
        header = QHBoxLayout()
        header.addWidget(self.folder_label, 1)
        for widget in (self.skipped_button, self.progress, self.cancel_button, self.index_button, self.open_button):
            header.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(header)
        layout.addWidget(self.skipped_list)
        layout.addWidget(self.tabs, 1)
        self.top_tab.k.valueChanged.connect(lambda _k: self.refresh_top())
        self.top_tab.add_layer_button.clicked.connect(self._index_selected_layer)
        self.top_tab.neuron_button.clicked.connect(self.rank_by_neuron)
        self.top_tab.picked.connect(self._on_top_picked)
        self.neighbours_tab.layer.currentTextChanged.connect(lambda _t: self.refresh_neighbours())
        self.neighbours_tab.k.valueChanged.connect(lambda _k: self.refresh_neighbours())
        self.neighbours_tab.grid.picked.connect(self._open_row)
        self.map_tab.compute_button.clicked.connect(self.compute_map)
        self.map_tab.cancel_button.clicked.connect(self._cancel_map)
        self.map_tab.picked.connect(self._open_row)
        self.map_tab.wants_selection.connect(self._show_map_selection)
        session.selection_changed.connect(lambda _selection: self.refresh_top())
        session.forward_changed.connect(lambda _summary: self.refresh_neighbours())
        session.model_changed.connect(self._on_model_changed)

    # ---------------------------------------------------------------- the folder and its index
    def _on_open_clicked(self) -> None:
        folder = file_dialogs.existing_folder(self, "Index a folder of images")
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str | Path, start: bool = True) -> None:
        """Make `folder` the panel's dataset; index it (or bring its index up to date) when `start`."""
        self.folder, self.index = Path(folder), None
        self._controller.dataset_folder = self.folder
        self._controller.dataset_folder_changed.emit(self.folder)
        self._extra_layers = []
        self.folder_label.setText(f"<b>{self.folder.name}/</b>: looking for its index…")
        self.folder_label.setToolTip(str(self.folder))
        self.clear_views("")
        self.start_indexing(plan_only=not start)

    def clear_views(self, text: str) -> None:
        """Nothing of another folder or model stays on screen."""
        for key in ("dataset_top", "dataset_neighbours", "dataset_map", "dataset_neuron"):
            self._jobs.cancel(key)
        self.top_tab.clear(text)
        self.neighbours_tab.grid.clear()
        self.neighbours_tab.info.setText("")
        self.map_tab.set_index(None)
        self.map_tab.busy(False)
        self.map_tab.selection.clear()
        self.map_tab.legend.setText("")
        self.evaluation_tab.clear()

    # ---------------------------------------------------------------- views
    def refresh(self) -> None:
        if not on_screen(self) or self.index is None:
            return
        current = self.tabs.currentWidget()
        if current is self.top_tab:
            self.refresh_top()
        elif current is self.neighbours_tab:
            self.refresh_neighbours()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override: compute only when looked at
        super().showEvent(event)
        self.refresh()

    def _unit(self, selection: Selection) -> tuple[str, int] | None:
        if selection.layer is None and selection.class_index is not None:
            return LOGITS, selection.class_index
        if selection.layer is not None and selection.channel is not None:
            return selection.layer, selection.channel
        return None

    def refresh_top(self) -> None:
        index, model = self.index, _intact(self._session.model)
        if index is None or model is None or not on_screen(self.top_tab):
            return
        unit = self._unit(self._session.selection)
        if unit is None:
            layer = self._session.selection.layer
            self.top_tab.clear(f"Select a channel of {layer} (click a map in Feature maps) to see the images "
                               "it fires on most." if layer else "Select a channel in Feature maps, or a class, "
                               "to see the images of the folder where it fires most.")
            return
        layer, channel = unit
        if layer not in index.layers:
            self.top_tab.not_indexed(layer)
            return
        self._jobs.cancel("dataset_neuron")
        self._show_unit(index, model, layer, channel, scan=None)

    def _show_unit(self, index, model, layer: str, channel: int, scan) -> None:
        k, bench = self.top_tab.k.value(), self._controller.workbench
        neuron = self._session.selection.neuron if len(index.manifest["shapes"].get(layer, ())) == 3 else None

        def work(_context):
            from cnnviewer.engine.dataset.views import unit_view
            field = None if layer == LOGITS else bench().summary(model).fields.get(layer)
            return unit_view(index, layer, channel, k, model.preprocess, field, scan=scan)

        def done(view) -> None:
            self.top_tab.show_view(view, model)
            self.top_tab.offer_neuron(neuron if scan is None else None)

        self._jobs.submit("dataset_top", work, on_done=done, on_error=self.top_tab.clear)

    def rank_by_neuron(self) -> None:
        """The selected neuron's exact top images: its value read from every image again, in slices."""
        index, model, selection = self.index, _intact(self._session.model), self._session.selection
        if index is None or model is None or selection.neuron is None or selection.channel is None:
            return
        layer, channel, position = selection.layer, selection.channel, selection.neuron
        self.top_tab.neuron_button.setEnabled(False)

        def start(_context):
            from cnnviewer.engine.dataset.neuron import NeuronScan
            return NeuronScan(model, index, layer, channel, position, batch_size=16)

        def step(scan) -> None:
            if self._session.selection != selection:
                return
            self.top_tab.neuron_button.setText(f"Reading {scan.done:,}/{scan.total:,} images…")
            if scan.finished:
                self._show_unit(index, model, layer, channel, scan)
                return
            self._jobs.submit("dataset_neuron", lambda context: (scan.run(SLICE_SECONDS, context.cancel), scan)[1],
                              on_done=step, on_error=self.top_tab.clear)

        self._jobs.submit("dataset_neuron", start, on_done=step, on_error=self.top_tab.clear)

    def _index_selected_layer(self) -> None:
        layer = self._session.selection.layer
        if layer and self.folder is not None:
            self._extra_layers.append(layer)
            self.start_indexing()

    def _on_top_picked(self, row: int, layer: str, channel: int, position: tuple[int, int]) -> None:
        """The image becomes the input, with the unit's neuron at its maximum selected."""
        self._open_row(row)
        if layer == LOGITS:
            self._session.select(layer=None, class_index=channel)
        elif self.index is not None and len(self.index.manifest["shapes"][layer]) == 3:
            self._session.select(layer=layer, channel=channel, neuron=position)
        else:
            self._session.select(layer=layer, channel=channel)

    def _open_row(self, row: int) -> None:
        if self.index is not None and row in self.index.rows:
            self._controller.open_image(str(self.index.path(row)))

    def refresh_neighbours(self) -> None:
        index, model, image = self.index, _intact(self._session.model), self._session.image
        layer = self.neighbours_tab.layer.currentText()
        if index is None or model is None or image is None or not layer or not on_screen(self.neighbours_tab):
            return
        k = self.neighbours_tab.k.value()

        def work(_context):
            from cnnviewer.engine.dataset.extract import image_features
            from cnnviewer.engine.dataset.views import neighbour_view
            return neighbour_view(index, image_features(model, image, layer), layer, k)

        self._jobs.submit("dataset_neighbours", work, on_error=self.neighbours_tab.info.setText,
                          on_done=lambda found: self.neighbours_tab.show_found(found, image.name, layer))

    def compute_map(self) -> None:
        index, layer = self.index, self.map_tab.layer.currentText()
        if index is None or not layer:
            return
        method, clusters = self.map_tab.method(), self.map_tab.clusters.value()

        def work(context):
            from cnnviewer.engine.dataset.embedding import dataset_map
            from cnnviewer.ui.panels.dataset.map import spread_subset
            found = dataset_map(index, layer, method=method, clusters=clusters, cancel=context.cancel,
                                progress=context.progress)
            shown = found.rows[spread_subset(found.points)]
            return found, shown, index.thumbnails(shown)

        self.map_tab.busy(True)
        self._jobs.submit("dataset_map", work, label=f"Map of {layer}", on_done=self.map_tab.show_map,
                          on_error=self.map_tab.failed)

    def _cancel_map(self) -> None:
        self._jobs.cancel("dataset_map")
        self.map_tab.busy(False)
        self.map_tab.info.setText("Map cancelled.")

    def _show_map_selection(self, rows) -> None:
        index = self.index
        if index is None:
            return
        self._jobs.submit("dataset_map_selection", lambda _context: (rows, index.thumbnails(rows)),
                          on_done=lambda result: self.map_tab.show_selection(index, *result))
