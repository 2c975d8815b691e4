"""The strip that lists the active knock-outs: each removable (×), plus Clear all.

Shown only while the model every panel looks at has knock-outs, so nobody reads an intervened
network's maps believing they are the intact one's.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMenuBar,
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


class InterventionStrip(QWidget):
    """A row: 'Knock-outs:', 'Clear all', one chip per knock-out (its description and ×). It sits in
    the menu bar's free right-hand side (`place_strip`), so showing it resizes no dock."""

    remove_requested = Signal(int)     # index into the list shown
    clear_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("interventions")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 6, 0)
        row.setSpacing(6)
        self.setToolTip("Every panel shows the model with these channels knocked out. Remove one (×) "
                        "or Clear all to see the intact model again.")
        self.descriptions: list[str] = []
        self._chips: list[QWidget] = []
        self.title = QLabel("  Knock-outs active:  ")
        self.title.setStyleSheet("font-weight: bold; color: #e5a50a;")
        row.addWidget(self.title)
        self.clear_button = QPushButton("Clear all")
        self.clear_button.setFlat(True)
        self.clear_button.setToolTip("Remove every knock-out: back to the intact model")
        self.clear_button.clicked.connect(self.clear_requested.emit)
        row.addWidget(self.clear_button)   # first: long chips never push it out of sight
        self._chip_row = QWidget()
        self._chip_layout = QHBoxLayout(self._chip_row)
        self._chip_layout.setContentsMargins(0, 0, 0, 0)
        self._chip_layout.setSpacing(6)
        row.addWidget(self._chip_row)
        self.setVisible(False)

    def set_interventions(self, knockouts) -> None:
        """Show `knockouts` (engine Knockouts, or anything with describe()); hide when there are none."""
        for chip in self._chips:
            self._chip_layout.removeWidget(chip)
            chip.deleteLater()
        self._chips = []
        self.descriptions = [k.describe() for k in knockouts]
        bar = self.parentWidget()
        width = CHIP_TEXT_WIDTH
        if isinstance(bar, QMenuBar) and self.descriptions:   # every chip shares the menu bar's free room
            room = bar.width() - 240 - self.title.sizeHint().width() - self.clear_button.sizeHint().width()
            width = max(60, min(CHIP_TEXT_WIDTH, room // len(self.descriptions) - 40))
        for i, text in enumerate(self.descriptions):
            chip = QWidget()
            chip.setObjectName("knockout_chip")
            chip.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
            chip.setStyleSheet(CHIP_STYLE)
            row = QHBoxLayout(chip)
            row.setContentsMargins(6, 0, 2, 0)
            label = QLabel(label_metrics(self).elidedText(
                text, Qt.TextElideMode.ElideMiddle if width == CHIP_TEXT_WIDTH else Qt.TextElideMode.ElideRight,
                width))   # narrow chips keep the layer's name, their start
            label.setToolTip(text)
            remove = QToolButton()
            remove.setText("×")
            remove.setAutoRaise(True)
            remove.setFixedSize(18, 18)     # the chip keeps to the menu bar's height
            remove.setToolTip(f"Remove this knock-out: {text}")
            remove.clicked.connect(lambda _checked=False, row_index=i: self.remove_requested.emit(row_index))
            row.addWidget(label)
            row.addWidget(remove)
            self._chip_layout.addWidget(chip)
            self._chips.append(chip)
        self.setVisible(bool(self.descriptions))
        if isinstance(bar, QMenuBar) and bar.cornerWidget(Qt.Corner.TopRightCorner) is self:
            wanted = (self.title.sizeHint().width() + self.clear_button.sizeHint().width() + 6 * (len(self._chips) + 3)
                      + sum(chip.sizeHint().width() for chip in self._chips))   # before any layout pass has run
            self.setFixedWidth(min(wanted, max(200, bar.width() - 240)))   # the menus keep their room
            bar.setCornerWidget(self, Qt.Corner.TopRightCorner)   # the menu bar sizes its corner only when set
            QTimer.singleShot(0, lambda: bar.cornerWidget(Qt.Corner.TopRightCorner) is self
                              and bar.setCornerWidget(self, Qt.Corner.TopRightCorner))   # once the chips are laid out

    def remove_buttons(self) -> list[QToolButton]:
        """The × buttons, in order (for tests and keyboard users)."""
        return [chip.findChild(QToolButton) for chip in self._chips]


def place_strip(window, strip: InterventionStrip) -> None:
    """In the menu bar's free right-hand side: showing or hiding the strip then resizes no dock (as a
    toolbar row it resized every dock and redrew every visible plot, making the window late by
    50-60 ms at each knock-out). A native (macOS) menu bar has no corner: there it is a toolbar row."""
    bar = window.menuBar()
    if bar.isNativeMenuBar():
        holder = QToolBar("Knock-outs", window)
        holder.setObjectName("interventions_bar")
        holder.setMovable(False)
        holder.toggleViewAction().setVisible(False)
        holder.addWidget(strip)
        window.addToolBar(Qt.ToolBarArea.TopToolBarArea, holder)
        return
    bar.setCornerWidget(strip, Qt.Corner.TopRightCorner)


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
