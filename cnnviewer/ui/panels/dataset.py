"""Dataset: what makes a unit fire, across a folder of images.

Drop a folder (or File > Open image folder): it is indexed in the background, in short slices on
the job thread, so the other panels keep working; Cancel checkpoints it and Resume (or opening the
folder again, days later) goes on from there. Then, for the unit selected anywhere in the app: its
top images with their receptive-field patches and its histogram over the folder; the current
input's nearest neighbours; and a map of the folder. Clicking any image makes it the input.
"""

from __future__ import annotations

import os
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
from cnnviewer.engine.dataset.progress import RateMeter
from cnnviewer.engine.session import Selection, Session
from cnnviewer.ui import file_dialogs
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.dataset_tabs import MapTab, NeighboursTab, TopTab
from cnnviewer.ui.widgets.controls import on_screen

SLICE_SECONDS = 0.25       # indexing holds the job thread this long at a time


class DatasetPanel(QWidget):
    """A folder's index and its three views, for the session's model."""

    def __init__(self, session: Session, jobs: UiJobs, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self.folder: Path | None = None
        self.index = None          # DatasetIndex (numpy only; read on the job thread)
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
        self._extra_layers = []
        self.folder_label.setText(f"<b>{self.folder.name}/</b>: looking for its index…")
        self.folder_label.setToolTip(str(self.folder))
        self.top_tab.clear("")
        self.start_indexing(plan_only=not start)

    def start_indexing(self, plan_only: bool = False) -> None:
        """Plan the build (what is new, what a checkpoint or an old index already holds), then run it."""
        model, folder = self._session.model, self.folder
        if model is None or folder is None:
            return
        layers = self._layers_for(model)
        workers = 1 if (os.cpu_count() or 1) >= 2 else 0

        def work(_context):
            from cnnviewer.engine.dataset.build import IndexBuild
            from cnnviewer.engine.dataset.index import default_directory
            return IndexBuild(folder, model, default_directory(folder, model), layers=layers,
                              workers=workers, mp_context="spawn", batch_size=16)

        def planned(build) -> None:
            self._build = build
            if build.unchanged or build.finished:
                self._finish()
            elif plan_only:
                self._show_waiting(build)
            else:
                self._run_slice()

        self._jobs.submit("dataset_open", work, on_done=planned, on_error=self._show_failure)

    def _layers_for(self, model) -> list[str] | None:
        if not self._extra_layers:
            return None
        from_index = self.index.layers if self.index is not None else None
        return list(dict.fromkeys([*(from_index or []), *self._extra_layers]))

    def _run_slice(self) -> None:
        build = self._build
        if build is None:
            return
        self._show_progress(build)

        def work(context):
            return build.run(seconds=SLICE_SECONDS, cancel=context.cancel), build.done, build.total

        def sliced(result) -> None:
            finished, _done, _total = result
            if self._build is not build:
                return
            if finished:
                self._finish()
            else:
                self._run_slice()

        self._jobs.submit("dataset_index", work, on_done=sliced, on_error=self._show_failure)

    def _finish(self) -> None:
        build = self._build
        self._jobs.submit("dataset_finish", lambda _context: build.finish(), on_error=self._show_failure,
                          on_done=lambda index: self._on_indexed(index, build.read))

    def cancel_indexing(self) -> None:
        """Stop indexing; what was computed is kept and Resume goes on from there."""
        build, self._build = self._build, None
        self._jobs.cancel("dataset_index")
        if build is not None:
            def pause(_context):
                build.checkpoint()
                build.close()
                return build.done, build.total
            self._jobs.submit("dataset_pause", pause, on_done=lambda counts: self._show_paused(*counts))

    def _on_indexed(self, index, read: int) -> None:
        self.index, self._build = index, None
        manifest = index.manifest
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self.index_button.setVisible(False)
        read = f"; {read:,} read in {manifest['seconds']:.0f} s" if read else " (its index was up to date)"
        self.folder_label.setText(f"<b>{self.folder.name}/</b>: {len(index.rows):,} images indexed for "
                                  f"{manifest['model']}{read}")
        self._show_skipped(index.skipped)
        from cnnviewer.engine.dataset.index import retrieval_layer
        layers = [name for name in index.layers if name != LOGITS]
        for tab in (self.neighbours_tab, self.map_tab):
            tab.set_layers(layers, default=retrieval_layer(index) if layers else None)
        self.map_tab.set_index(index, self._session.model)
        self.refresh()

    # ---------------------------------------------------------------- status
    def _show_progress(self, build) -> None:
        from_meter = getattr(self, "_meter", None)
        if from_meter is None or from_meter[0] is not build:
            self._meter = from_meter = (build, RateMeter())
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.index_button.setVisible(False)
        self.progress.setValue(int(1000 * build.done / max(build.total, 1)))
        text = from_meter[1](build.done, build.total)
        self.progress.setFormat(f"{build.done / max(build.total, 1):.0%}")
        self.folder_label.setText(f"<b>{self.folder.name}/</b>: indexing for {build.model.name} — {text}")

    def _show_waiting(self, build) -> None:
        self._build = None
        self.index_button.setText("Resume" if build.done else "Index")
        self.index_button.setVisible(True)
        self.folder_label.setText(f"<b>{self.folder.name}/</b>: {build.total - build.done:,} of {build.total:,} "
                                  f"images still to index for {build.model.name}")
        build.close()

    def _show_paused(self, done: int, total: int) -> None:
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self.index_button.setText("Resume")
        self.index_button.setVisible(True)
        self.folder_label.setText(f"<b>{self.folder.name}/</b>: paused at {done:,} of {total:,} images; "
                                  "Resume goes on from there")

    def _show_failure(self, text: str) -> None:
        self._build = None
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        name = f"<b>{self.folder.name}/</b>: " if self.folder else ""
        self.folder_label.setText(f"{name}not indexed: {text}")

    def _show_skipped(self, skipped: list[tuple[str, str]]) -> None:
        self.skipped_list.clear()
        self.skipped_list.addItems([reason if reason.startswith(Path(path).name) else f"{path}: {reason}"
                                    for path, reason in skipped])
        self.skipped_button.setText(f"{len(skipped)} unreadable ▾")
        self.skipped_button.setToolTip("Files that could not be read (skipped): show the list with the reasons")
        self.skipped_button.setVisible(bool(skipped))
        self.skipped_list.setVisible(bool(skipped) and self.skipped_button.isChecked())

    def _on_model_changed(self, _model) -> None:
        self._jobs.cancel("dataset_index")
        self.index, self._build = None, None
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        if self.folder is not None:
            self.start_indexing(plan_only=True)   # reopened when indexed for this model; else a button

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
        index, model = self.index, self._session.model
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
        k, bench = self.top_tab.k.value(), self._controller.workbench

        def work(_context):
            from cnnviewer.engine.dataset.views import unit_view
            field = None if layer == LOGITS else bench().summary(model).fields.get(layer)
            return unit_view(index, layer, channel, k, model.preprocess, field)

        self._jobs.submit("dataset_top", work, on_done=lambda view: self.top_tab.show_view(view, model),
                          on_error=self.top_tab.clear)

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
        index, model, image = self.index, self._session.model, self._session.image
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
            from cnnviewer.ui.panels.dataset_map import spread_subset
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
