"""Experiments: what the computation depends on. Which channels matter, residual-block lesions and
the equivariance / invariance probe, one tab each, every result saved as PNG + JSON.

Knock-outs themselves are made where the channels are shown (Feature maps, Architecture) and
listed in the window's intervention strip; these tabs measure the model the session shows.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.session import Session
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.panels.experiments.saving import save_experiment, suggested_name

# title -> (module under cnnviewer.ui.panels.experiments, class, what it measures, in one line)
TABS: tuple[tuple[str, str, str, str], ...] = (
    ("Channels", "channels", "ChannelsTab",
     "Knock out each channel of a layer alone: how much does the target drop?"),
    ("Lesions", "lesion", "LesionTab",
     "Delete each residual block (its output becomes its input): how often does the top-1 survive?"),
    ("Equivariance", "probe", "ProbeTab",
     "Shift, flip, rotate or scale the input: does each layer's map move with it, or stay put?"),
)


class ExperimentsPanel(QWidget):
    """The three experiments as tabs, built when first shown (each imports its plots)."""

    def __init__(self, session: Session, jobs: UiJobs, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self._folder: Path | None = None
        self._built: dict[int, QWidget] = {}
        self.tabs = QTabWidget()
        for title, _module, _class, about in TABS:
            placeholder = QLabel(about)
            placeholder.setWordWrap(True)
            self.tabs.addTab(placeholder, title)
            self.tabs.setTabToolTip(self.tabs.count() - 1, about)
        self.about = QLabel(TABS[0][3])
        self.about.setWordWrap(True)
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save the result shown as a PNG, with its numbers in a JSON file beside it")
        self.save_button.clicked.connect(self._on_save_clicked)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        header = QHBoxLayout()
        header.addWidget(self.about, 1)
        header.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(header)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.info)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        folders = getattr(controller, "dataset_folder_changed", None)
        if folders is not None:
            folders.connect(self.set_folder)
            self._folder = getattr(controller, "dataset_folder", None)

    def tab(self, index: int) -> QWidget:
        """The experiment in tab `index`, built on first use (a placeholder stands in before)."""
        found = self._built.get(index)
        if found is None:
            _title, module, class_name, _about = TABS[index]
            tab_class = getattr(import_module(f"cnnviewer.ui.panels.experiments.{module}"), class_name)
            found = tab_class(self._session, self._jobs, self._controller)
            found.set_folder(self._folder)
            current, placeholder = self.tabs.currentIndex(), self.tabs.widget(index)
            self.tabs.blockSignals(True)
            self.tabs.removeTab(index)
            self.tabs.insertTab(index, found, TABS[index][0])
            self.tabs.setTabToolTip(index, TABS[index][3])
            self.tabs.setCurrentIndex(current)
            self.tabs.blockSignals(False)
            placeholder.deleteLater()
            self._built[index] = found
        return found

    @property
    def channels(self) -> QWidget:
        return self.tab(0)

    @property
    def lesion(self) -> QWidget:
        return self.tab(1)

    @property
    def probe(self) -> QWidget:
        return self.tab(2)

    def _on_tab_changed(self, index: int) -> None:
        self.about.setText(TABS[index][3])
        if self.isVisible():
            self.tab(index)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override: the tab in front is built when seen
        super().showEvent(event)
        self.tab(self.tabs.currentIndex())

    def set_folder(self, folder) -> None:
        """The Dataset panel's folder: the lesion study and the probe run over it by default."""
        self._folder = Path(folder) if folder else None
        for tab in self._built.values():
            tab.set_folder(self._folder)

    def _on_save_clicked(self) -> None:
        from cnnviewer.ui import file_dialogs

        index = self.tabs.currentIndex()
        tab = self.tab(index)
        if tab.result_json() is None:
            self.info.setText("Nothing to save yet: run the experiment first.")
            return
        model = self._session.model
        name = suggested_name(TABS[index][1], model.name if model is not None else "")
        path = file_dialogs.save_file(self, "Save the experiment", name, "PNG (*.png)")
        if path:
            self.save(path)

    def save(self, path: str | Path, index: int | None = None) -> bool:
        """Save tab `index`'s result (default: the tab in front) to `path` (.png) and its .json; a
        failure is said in the panel, never raised."""
        tab = self.tab(self.tabs.currentIndex() if index is None else index)
        payload = tab.result_json()
        if payload is None:
            self.info.setText("Nothing to save yet: run the experiment first.")
            return False
        model = self._session.model
        payload = {"experiment": TABS[self.tabs.indexOf(tab)][1], "model": model.name if model else None,
                   "model_title": model.title if model else None,       # says "untrained", "with 2 knock-outs"
                   "interventions": [k.describe() for k in model.interventions] if model else [],
                   **payload}
        written = save_experiment(path, tab.result_picture(), payload)
        self.info.setText(written)
        return written.startswith("Saved")
