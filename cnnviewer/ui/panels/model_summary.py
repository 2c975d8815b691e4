"""Model summary: one sortable row per layer with shapes, units, weights, MACs, receptive field."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.session import Selection, Session
from cnnviewer.engine.structure.summary import Summary, summary_csv
from cnnviewer.ui import file_dialogs
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.widgets.controls import on_screen

COLUMNS = ("Layer", "Type", "Output", "Units", "Weights", "Biases", "MACs", "RF size", "Jump", "Start")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1


def _pair(values: tuple[float, float]) -> str:
    a, b = (int(v) if float(v).is_integer() else round(v, 2) for v in values)
    return f"{a}" if a == b else f"{a}×{b}"


Cell = tuple[str, object]   # (text shown, value sorted by)


def table_cells(summary: Summary) -> list[tuple[list[Cell], str]]:
    """Every row's cells and tooltip, as plain Python (built on the job thread).

    The table then holds C++ items only: a Python table model is asked for
    every cell's size hint on each reset and paint, which stalled the window
    by up to 200 ms on a model switch.
    """
    cells = []
    for position, row in enumerate(summary.rows):
        whole = row.rf_whole
        fields = [("whole image" if whole else _pair(row.rf_size), float("inf") if whole else float(row.rf_size[0])),
                  ("—" if whole else _pair(row.rf_jump), float(row.rf_jump[0])),
                  ("—" if whole else _pair(row.rf_start), float(row.rf_start[0]))]
        numbers = [(f"{value:,}", value) for value in (row.units, row.params, row.bias_params, row.macs)]
        hyper = ", ".join(f"{k} {v}" for k, v in row.hyper.items())
        cells.append(([(row.name, position), (row.type, row.type), ("×".join(map(str, row.output_shape)), row.units),
                       *numbers, *fields], f"{row.name} ({row.type}) {hyper}".strip()))
    return cells


def _table_model(cells: list[tuple[list[Cell], str]], parent: QWidget) -> QStandardItemModel:
    """A filled item model: layer names sort in model order, numbers as numbers."""
    model = QStandardItemModel(len(cells), len(COLUMNS), parent)
    model.setHorizontalHeaderLabels(COLUMNS)
    right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
    for r, (row, tooltip) in enumerate(cells):
        for c, (text, value) in enumerate(row):
            item = QStandardItem(text)
            item.setData(value, SORT_ROLE)
            item.setToolTip(tooltip)
            item.setEditable(False)
            if c >= 3:
                item.setTextAlignment(right)
            model.setItem(r, c, item)
    return model


class NameOrTypeFilter(QSortFilterProxyModel):
    """Rows whose layer name or type contains the search text ('conv' finds every Conv2d)."""

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:  # noqa: N802 - Qt override
        text = self.filterRegularExpression().pattern().lower()
        if not text:
            return True
        model = self.sourceModel()
        return any(text in str(model.index(row, column, parent).data()).lower() for column in (0, 1))


class ModelSummaryPanel(QWidget):
    """The summary table; clicking a row selects that layer everywhere."""

    def __init__(self, session: Session, jobs: UiJobs, workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench = session, jobs, workbench
        self.summary: Summary | None = None
        self._summary_token: int | None = None   # the model the table (or its pending job) is for
        self.proxy = NameOrTypeFilter(self)
        self.proxy.setSourceModel(_table_model([], self))
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(0)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.table = QTableView(self)
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_row_changed)
        self.matches = QLabel("")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter layers…")
        self.search.textChanged.connect(self._on_search_changed)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self._on_export_clicked)
        self.totals = QLabel("")
        self.totals.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.matches)
        top.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.totals)
        session.model_changed.connect(lambda _model: self.refresh())
        session.selection_changed.connect(self._on_selection_changed)

    def refresh(self) -> None:
        """Ask the engine for the current model's table."""
        model, workbench = self._session.model, self._workbench
        if model is None or not on_screen(self) or (self.summary is not None and self._summary_token == model.token):
            return
        self._summary_token = model.token
        self.totals.setText(f"Summarising {model.title}…")
        def work(_context):
            summary = workbench().summary(model)
            return summary, table_cells(summary)

        self._jobs.submit("summary", work, on_done=lambda result: self.show_summary(*result),
                          on_error=self.totals.setText)

    def show_summary(self, summary: Summary, cells: list | None = None) -> None:
        """Fill the table (columns sized once) and the totals line."""
        self.summary = summary
        previous = self.proxy.sourceModel()
        self.proxy.setSourceModel(_table_model(cells if cells is not None else table_cells(summary), self))
        previous.deleteLater()
        self.table.resizeColumnsToContents()
        weights = sum(row.params for row in summary.rows)
        biases = sum(row.bias_params for row in summary.rows)
        self.totals.setText(
            f"<b>{summary.model}</b>, input {'×'.join(map(str, summary.input_shape))}: "
            f"{len(summary.rows)} layers, {weights:,} weights + {biases:,} biases = {summary.total_params:,} "
            f"parameters, {summary.total_macs / 1e9:.3g} G multiply-accumulates. "
            f"Graph from {summary.method}.")
        self._on_selection_changed(self._session.selection)

    def _on_search_changed(self, text: str) -> None:
        from PySide6.QtCore import QRegularExpression
        self.proxy.setFilterRegularExpression(QRegularExpression(QRegularExpression.escape(text.strip())))
        if self.summary is not None:
            shown = self.proxy.rowCount()
            self.search.setToolTip("" if shown else f"No layer name or type contains {text.strip()!r}")
            self.search.setStyleSheet("" if shown or not text.strip() else "QLineEdit { color: #c0392b; }")
            self.matches.setText("" if not text.strip() else f"{shown} of {len(self.summary.rows)} layers match"
                                 if shown else f"No layer name or type contains {text.strip()!r}")

    def _on_current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self._session.select(layer=self.summary.rows[self.proxy.mapToSource(current).row()].name)

    def _on_selection_changed(self, selection: Selection) -> None:
        names = [row.name for row in self.summary.rows] if self.summary is not None else []
        if selection.layer not in names:   # a block: show the layer that produces its output
            inside = [i for i, name in enumerate(names) if name.startswith(f"{selection.layer}.")]
            if not selection.layer or not inside:
                return
            position = inside[-1]
        else:
            position = names.index(selection.layer)
        source = self.proxy.sourceModel().index(position, 0)
        index = self.proxy.mapFromSource(source)
        if index.isValid() and self.table.currentIndex().row() != index.row():
            self.table.selectionModel().blockSignals(True)
            self.table.setCurrentIndex(index)
            self.table.selectionModel().blockSignals(False)
            self.table.viewport().update()
            self.table.scrollTo(index)

    def _on_export_clicked(self) -> None:
        if self.summary is None:
            return
        path = file_dialogs.save_file(self, "Export summary as CSV", f"{self.summary.model}.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str) -> bool:
        """Write the table as CSV; a failure is said under the table, never raised in the slot."""
        from cnnviewer.engine.errors import CnnViewerError
        from cnnviewer.engine.media.files import atomic_output, writable_target
        try:
            with atomic_output(writable_target(path)) as temporary:
                temporary.write_text(summary_csv(self.summary), encoding="utf-8")
        except CnnViewerError as error:
            self.totals.setText(f"Not exported: {error}")
            return False
        return True
