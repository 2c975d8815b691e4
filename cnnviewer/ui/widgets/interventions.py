"""The strip that lists the active knock-outs: each removable (×), plus Clear all.

Shown only while the model every panel looks at has knock-outs, so nobody reads an intervened
network's maps believing they are the intact one's.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QToolBar,
    QToolButton,
    QWidget,
)

CHIP_STYLE = ("QWidget#knockout_chip { background: #5a3a1a; border: 1px solid #e5a50a; border-radius: 4px; }"
              " QLabel { color: #f6e3c0; }")


CHIP_TEXT_WIDTH = 300   # px: a few chips fit a laptop-wide window; the full text is the tooltip


def label_metrics(widget: QWidget) -> QFontMetrics:
    return QFontMetrics(widget.font())


class InterventionStrip(QToolBar):
    """A toolbar row: 'Knock-outs:', one chip per knock-out (its description and ×), 'Clear all'."""

    remove_requested = Signal(int)     # index into the list shown
    clear_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Knock-outs", parent)
        self.setObjectName("interventions")
        self.setMovable(False)
        self.setFloatable(False)
        self.toggleViewAction().setVisible(False)    # shown by its content, not by the user
        self.setToolTip("Every panel shows the model with these channels knocked out. Remove one (×) "
                        "or Clear all to see the intact model again.")
        self.descriptions: list[str] = []
        self._chips: list[QWidget] = []
        self.title = QLabel("  Knock-outs active:  ")
        self.title.setStyleSheet("font-weight: bold; color: #e5a50a;")
        self.addWidget(self.title)
        self.clear_button = QPushButton("Clear all")
        self.clear_button.setToolTip("Remove every knock-out: back to the intact model")
        self.clear_button.clicked.connect(self.clear_requested.emit)
        self.addWidget(self.clear_button)   # first: long chips never push it out of sight
        self._chip_row = QWidget()
        self._chip_layout = QHBoxLayout(self._chip_row)
        self._chip_layout.setContentsMargins(0, 0, 0, 0)
        self._chip_layout.setSpacing(6)
        self.addWidget(self._chip_row)
        self.setVisible(False)

    def set_interventions(self, knockouts) -> None:
        """Show `knockouts` (engine Knockouts, or anything with describe()); hide when there are none."""
        for chip in self._chips:
            self._chip_layout.removeWidget(chip)
            chip.deleteLater()
        self._chips = []
        self.descriptions = [k.describe() for k in knockouts]
        for i, text in enumerate(self.descriptions):
            chip = QWidget()
            chip.setObjectName("knockout_chip")
            chip.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
            chip.setStyleSheet(CHIP_STYLE)
            row = QHBoxLayout(chip)
            row.setContentsMargins(6, 1, 2, 1)
            label = QLabel(label_metrics(self).elidedText(text, Qt.TextElideMode.ElideMiddle, CHIP_TEXT_WIDTH))
            label.setToolTip(text)
            remove = QToolButton()
            remove.setText("×")
            remove.setAutoRaise(True)
            remove.setToolTip(f"Remove this knock-out: {text}")
            remove.clicked.connect(lambda _checked=False, row_index=i: self.remove_requested.emit(row_index))
            row.addWidget(label)
            row.addWidget(remove)
            self._chip_layout.addWidget(chip)
            self._chips.append(chip)
        self.setVisible(bool(self.descriptions))

    def remove_buttons(self) -> list[QToolButton]:
        """The × buttons, in order (for tests and keyboard users)."""
        return [chip.findChild(QToolButton) for chip in self._chips]


def ask_factor(parent: QWidget, what: str) -> float | None:
    """The factor for a 'scale by…' knock-out (0.5 halves the channels, 2 doubles them); None if cancelled."""
    from PySide6.QtWidgets import QInputDialog
    factor, ok = QInputDialog.getDouble(parent, "Scale channels", f"Multiply {what} by:", 0.5, -100.0, 100.0, 3)
    return float(factor) if ok else None


def knockout_nodes(placed_nodes, knocked_layers: set[str]) -> list:
    """The architecture graph's PlacedNodes with each knock-out's own operation named 'knock-out'.

    A knock-out on a container module (a residual block) is one `addcmul` the tracer sees at the end
    of that module; unnamed it would read as one of the model's own merges.
    """
    import dataclasses
    shown = []
    for placed in placed_nodes:
        node = placed.node
        if node.label == "addcmul" and node.layer is None and node.blocks and node.blocks[-1] in knocked_layers:
            node = dataclasses.replace(node, label="knock-out", kind="other", type_name="knock-out")
            placed = dataclasses.replace(placed, node=node)
        shown.append(placed)
    return shown
