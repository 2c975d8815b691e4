"""Model summary: one sortable row per layer with shapes, units, weights, MACs, receptive field."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
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
from cnnviewer.engine.structure.summary import LayerRow, Summary, summary_csv
from cnnviewer.ui.jobs import UiJobs

COLUMNS = ("Layer", "Type", "Output", "Units", "Weights", "Biases", "MACs", "RF size", "Jump", "Start")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1


def _pair(values: tuple[float, float]) -> str:
    a, b = (int(v) if float(v).is_integer() else round(v, 2) for v in values)
    return f"{a}" if a == b else f"{a}×{b}"


class SummaryTableModel(QAbstractTableModel):
    """A Summary's rows as a Qt table; numbers sort as numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: tuple[LayerRow, ...] = ()

    def set_summary(self, summary: Summary | None) -> None:
        self.beginResetModel()
        self.rows = summary.rows if summary is not None else ()
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        row = self.rows[index.row()]
        column = index.column()
        values = (row.name, row.type, "×".join(map(str, row.output_shape)), row.units, row.params,
                  row.bias_params, row.macs, row.rf_size, row.rf_jump, row.rf_start)
        value = values[column]
        if role == SORT_ROLE:
            if column in (7, 8, 9):
                return float("inf") if row.rf_whole and column == 7 else float(value[0])
            return index.row() if column == 0 else value   # layer names sort in model order
        if role == Qt.ItemDataRole.DisplayRole:
            if column in (3, 4, 5, 6):
                return f"{value:,}"
            if column == 7 and row.rf_whole:
                return "whole image"
            if column in (7, 8, 9):
                return "—" if row.rf_whole else _pair(value)
            return value
        if role == Qt.ItemDataRole.TextAlignmentRole and column >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            hyper = ", ".join(f"{k} {v}" for k, v in row.hyper.items())
            return f"{row.name} ({row.type}) {hyper}".strip()
        return None


class ModelSummaryPanel(QWidget):
    """The summary table; clicking a row selects that layer everywhere."""

    def __init__(self, session: Session, jobs: UiJobs, workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench = session, jobs, workbench
        self.summary: Summary | None = None
        self.table_model = SummaryTableModel()
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.table_model)
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
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_row_changed)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter layers…")
        self.search.textChanged.connect(self.proxy.setFilterFixedString)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self._on_export_clicked)
        self.totals = QLabel("")
        self.totals.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
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
        if model is None:
            return
        self.totals.setText(f"Summarising {model.title}…")
        self._jobs.submit("summary", lambda _context: workbench().summary(model),
                          on_done=self.show_summary, on_error=self.totals.setText)

    def show_summary(self, summary: Summary) -> None:
        """Fill the table and the totals line."""
        self.summary = summary
        self.table_model.set_summary(summary)
        weights = sum(row.params for row in summary.rows)
        biases = sum(row.bias_params for row in summary.rows)
        self.totals.setText(
            f"<b>{summary.model}</b>, input {'×'.join(map(str, summary.input_shape))}: "
            f"{len(summary.rows)} layers, {weights:,} weights + {biases:,} biases = {summary.total_params:,} "
            f"parameters, {summary.total_macs / 1e9:.3g} G multiply-accumulates. "
            f"Graph from {summary.method}.")
        self._on_selection_changed(self._session.selection)

    def _on_current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            row = self.table_model.rows[self.proxy.mapToSource(current).row()]
            self._session.select(layer=row.name)

    def _on_selection_changed(self, selection: Selection) -> None:
        names = [row.name for row in self.table_model.rows]
        if selection.layer not in names:   # a block: show the layer that produces its output
            inside = [i for i, name in enumerate(names) if name.startswith(f"{selection.layer}.")]
            if not selection.layer or not inside:
                return
            position = inside[-1]
        else:
            position = names.index(selection.layer)
        source = self.table_model.index(position, 0)
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
        path, _ = QFileDialog.getSaveFileName(self, "Export summary as CSV", f"{self.summary.model}.csv",
                                              "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str) -> None:
        """Write the table as CSV."""
        Path(path).write_text(summary_csv(self.summary), encoding="utf-8")
