"""The Live detection panel's detector list says which detectors have weights on disk.

Before, one found out only after running a detector ("untrained: no COCO weights offline" in the
small status text). The marks are looked up on the job thread (torchvision lives there, never on
the GUI thread) and drawn by a delegate in the open list, so the combo's item texts, which the
panel uses as detector names, stay the names.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QStyledItemDelegate

MARK_ROLE = Qt.ItemDataRole.UserRole + 7
HAS_WEIGHTS, UNTRAINED = "✓ weights", "untrained"


class MarkDelegate(QStyledItemDelegate):
    """Draws an item's mark after its name."""

    def initStyleOption(self, option, index) -> None:  # noqa: N802 - Qt override
        super().initStyleOption(option, index)
        mark = index.data(MARK_ROLE)
        if mark:
            option.text = f"{option.text}   {mark}"


def mark_detectors(combo: QComboBox, jobs) -> None:
    """Mark every detector of `combo` "✓ weights" or "untrained" once the job thread has looked."""
    combo.setItemDelegate(MarkDelegate(combo))
    names = [combo.itemText(i) for i in range(combo.count())]

    def work(_context) -> dict[str, bool]:
        from cnnviewer.engine.detection.detectors import weights_on_disk
        return {name: weights_on_disk(name) for name in names}

    def done(found: dict[str, bool]) -> None:
        for i in range(combo.count()):
            name = combo.itemText(i)
            if name in found:
                combo.setItemData(i, HAS_WEIGHTS if found[name] else UNTRAINED, MARK_ROLE)
                combo.setItemData(i, "real weights on disk" if found[name] else
                                  "no weights on disk: random initialisation (use Weights… for your own)",
                                  Qt.ItemDataRole.ToolTipRole)
        combo.view().setMinimumWidth(combo.view().sizeHintForColumn(0) + 40)

    jobs.submit("detector_marks", work, on_done=done)
