"""Every method's faithfulness scores in one sortable table, each column's direction in its header."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from cnnviewer.engine.attribution.scores import BETTER

COLUMNS = (("deletion", "Deletion AUC", "p(class) as the map's most relevant pixels are removed, averaged over "
            "the steps (Petsiuk et al. 2018)"),
           ("insertion", "Insertion AUC", "p(class) as the map's most relevant pixels are restored onto the "
            "substrate, averaged over the steps (Petsiuk et al. 2018)"),
           ("road-morf", "ROAD MoRF", "the change of the class score (logit) with the most relevant pixels "
            "imputed from their neighbours, averaged over 10-90 % removed (Rong et al. 2022)"),
           ("road-lerf", "ROAD LeRF", "the same with the least relevant pixels imputed first"),
           ("road", "ROAD", "(LeRF − MoRF) / 2 of the change in the class score, as pytorch-grad-cam's "
            "ROADCombined: a faithful map keeps the score when its unimportant pixels go and loses it when "
            "its important ones go"),
           ("average-drop", "Avg drop", "CAM methods: how much p(class) drops when the input is multiplied by "
            "the map, in % of p(class) (Chattopadhay et al. 2018, as torchcam)"),
           ("increase-in-confidence", "Increase", "CAM methods: 1 when the input multiplied by the map is more "
            "confident than the input itself (as torchcam)"))


class _Number(QTableWidgetItem):
    """Sorts by value, not by text; empty cells last."""

    def __init__(self, value: float | None, digits: int = 3) -> None:
        super().__init__("" if value is None else f"{value:.{digits}f}")
        self.value = float("inf") if value is None else value
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other) -> bool:
        return self.value < getattr(other, "value", float("inf"))


class ScoreTable(QTableWidget):
    """Rows: methods; columns: the scores computed (lower/higher is better in each header's tooltip)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setSortingEnabled(True)

    def show_scores(self, results: dict) -> None:
        """`results`: method -> an object with `.scores` (name -> float) and `.milliseconds`."""
        keys = [key for key, *_ in COLUMNS if any(key in r.scores for r in results.values())]
        self.setSortingEnabled(False)
        self.clear()
        self.setColumnCount(len(keys) + 2)
        self.setRowCount(len(results))
        headers = ["Method", *[next(title for k, title, _ in COLUMNS if k == key) for key in keys], "Seconds"]
        self.setHorizontalHeaderLabels(headers)
        for column, key in enumerate(keys, start=1):
            tip = next(text for k, _, text in COLUMNS if k == key)
            self.horizontalHeaderItem(column).setToolTip(f"{tip}. {BETTER.get(key, '').capitalize()} is better.")
        for row, (method, result) in enumerate(results.items()):
            self.setItem(row, 0, QTableWidgetItem(method))
            for column, key in enumerate(keys, start=1):
                self.setItem(row, column, _Number(result.scores.get(key)))
            self.setItem(row, len(keys) + 1, _Number(result.milliseconds / 1000, 1))
        self.setSortingEnabled(True)
