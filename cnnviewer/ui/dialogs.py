"""Dialogs: choosing a model (torchvision or timm), trusting a pickled file."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QMessageBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.segmentation.family import FAMILY_NOTES

OFFLINE_STATUSES = ("offline weights pack", "torch hub cache", "Hugging Face cache")


class ChooseModelDialog(QDialog):
    """Every torchvision classification and segmentation model and timm's CNNs, grouped by family,
    with its weights' source (and a note for families that are not ImageNet classifiers)."""

    def __init__(self, catalogue: dict[str, list[tuple[str, str]]] | None, current: str | None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose model")
        self.resize(520, 620)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search models…")
        self.search.textChanged.connect(self._on_search_changed)
        self.search.returnPressed.connect(self.accept)   # Enter: load the match shown (the first, if several)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Model", "Pretrained weights"])
        self.tree.setColumnWidth(0, 240)
        self.tree.itemDoubleClicked.connect(lambda *_: self.accept())
        note = QLabel("✓ (bold): real weights are already here (offline pack, torch hub or Hugging Face cache) "
                      "and load at once; others are downloaded, or the model loads untrained when offline. "
                      "timm's CNNs are listed as timm:NAME; segmentation networks output a class map.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.search)
        layout.addWidget(self.tree, 1)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self._current = current
        self.set_catalogue(catalogue, current)

    def fill(self, catalogue: dict[str, list[tuple[str, str]]]) -> None:
        """Slot for a catalogue that arrives while the dialog is open."""
        self.set_catalogue(catalogue, self._current)

    def set_catalogue(self, catalogue: dict[str, list[tuple[str, str]]] | None, current: str | None) -> None:
        """Fill the tree (None: still being listed)."""
        self.tree.clear()
        if catalogue is None:
            QTreeWidgetItem(self.tree, ["Listing models…", ""])
            return
        for family, entries in catalogue.items():
            family_item = QTreeWidgetItem(self.tree, [family, ""])
            family_item.setFlags(family_item.flags() & ~Qt.ItemFlag.ItemIsSelectable)
            family_note = FAMILY_NOTES.get(family, "")
            family_item.setToolTip(0, family_note)
            ready = 0
            for name, status in entries:
                offline = status in OFFLINE_STATUSES
                item = QTreeWidgetItem(family_item, [name, f"✓ {status}" if offline else status])
                item.setData(0, Qt.ItemDataRole.UserRole, name)
                item.setToolTip(0, family_note)
                if offline:   # real weights without a download: what a new user can try at once
                    font = item.font(0)
                    font.setBold(True)
                    item.setFont(0, font)
                    item.setFont(1, font)
                    ready += 1
                if name == current:
                    family_item.setExpanded(True)
                    self.tree.setCurrentItem(item)
            counts = f"{ready} with weights here" if ready else ""
            family_item.setText(1, " · ".join(part for part in (family_note, counts) if part))

    def _on_search_changed(self, text: str) -> None:
        text = text.strip().lower()
        root = self.tree.invisibleRootItem()
        for i in range(root.childCount()):
            family = root.child(i)
            visible = 0
            for j in range(family.childCount()):
                child = family.child(j)
                hidden = bool(text) and text not in child.text(0).lower() and text not in family.text(0).lower()
                child.setHidden(hidden)
                visible += not hidden
            family.setHidden(visible == 0)
            family.setExpanded(bool(text) and visible > 0)
        self._select_a_visible_model()

    def _visible_models(self) -> list[QTreeWidgetItem]:
        root = self.tree.invisibleRootItem()
        return [root.child(i).child(j) for i in range(root.childCount()) if not root.child(i).isHidden()
                for j in range(root.child(i).childCount()) if not root.child(i).child(j).isHidden()]

    def _select_a_visible_model(self) -> None:
        """Enter must load what the user sees: never a row the search has hidden."""
        visible = self._visible_models()
        current = self.tree.currentItem()
        if current in visible:
            return
        ready = [item for item in visible if item.text(1).startswith("✓")]   # weights here: try those first
        self.tree.setCurrentItem((ready or visible)[0] if visible else None)

    def chosen(self) -> str | None:
        """The selected model name, if the search still shows it."""
        item = self.tree.currentItem()
        if item is None or item not in self._visible_models():
            return None
        return item.data(0, Qt.ItemDataRole.UserRole)


def pick_model(parent: QWidget, controller, current: str | None) -> str | None:
    """File > Choose model (and the compare view's second model): the name chosen, or None."""
    dialog = ChooseModelDialog(controller.catalogue, current, parent)
    listing = controller.catalogue is None
    if listing:   # the catalogue is listed on the job thread and fills the dialog when ready
        controller.catalogue_ready.connect(dialog.fill)
        controller.fetch_catalogue()
    accepted, chosen = dialog.exec(), dialog.chosen()
    if listing:
        controller.catalogue_ready.disconnect(dialog.fill)
    dialog.deleteLater()
    return chosen if accepted else None


def ask_trust(parent: QWidget, path: str, message: str) -> bool:
    """Ask whether to run a pickled model file's code; default answer is No."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Trust this file?")
    box.setText(f"{path}\n\n{message}")
    box.setInformativeText("Press Yes only for a file you made or got from someone you trust: loading it runs "
                           "the Python code it names. No keeps the current model.")
    box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
    box.setDefaultButton(QMessageBox.StandardButton.No)
    return box.exec() == QMessageBox.StandardButton.Yes
