"""The main window: docks, menus, status bar, drag and drop, persisted layout."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QWidget,
)

from cnnviewer.engine.media.kinds import IMAGE_SUFFIXES, image_files
from cnnviewer.engine.session import Session
from cnnviewer.engine.types import WEIGHT_SUFFIXES
from cnnviewer.ui import file_dialogs
from cnnviewer.ui.checkpoint_bar import CheckpointBar
from cnnviewer.ui.checkpoints import CheckpointBrowser
from cnnviewer.ui.controller import Controller
from cnnviewer.ui.dialogs import ask_trust, pick_model
from cnnviewer.ui.drops import DropFilter
from cnnviewer.ui.folder_browser import FolderBrowser, nested_images
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.message_log import MessageLog, MessageLogDialog
from cnnviewer.ui.open_paths import open_paths
from cnnviewer.ui.panel_docks import PanelDocks
from cnnviewer.ui.panel_messages import log_panel_messages
from cnnviewer.ui.panels.registry import build_panel
from cnnviewer.ui.shutdown import stop_everything
from cnnviewer.ui.widgets.controls import on_screen, set_elided
from cnnviewer.ui.widgets.interventions import InterventionStrip, place_strip
from cnnviewer.ui.window_menus import (
    build_menus,
    recent_files,
    remember_recent,
)
from cnnviewer.ui.window_layout import (
    FullTabTitles,
    apply_proportions,
    first_launch_size,
    tabify,
    window_model_title,
)
from cnnviewer.ui.window_state import bring_floating_docks_forward, fit_to_screen

BUSY_WIDTH = 260   # px of the busy field: the status message on its left stays readable
CANCELLABLE = ("model", "image", "gradients", "gradient-scores", "faithfulness", "sanity",
               "experiment-channels", "experiment-lesion", "experiment-probe", "knockout", "compare_model")   # loads, downloads, attributions and their scores; not a forward pass
LEFT, RIGHT = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
DOCKS = (("predictions", "Input && predictions", LEFT), ("feature_maps", "Feature maps", RIGHT),
         ("filters", "Filters", LEFT), ("model_summary", "Model summary", RIGHT),
         ("receptive_field", "Receptive field", RIGHT), ("architecture", "Architecture", RIGHT),
         ("gradients", "Gradients", RIGHT), ("faithfulness", "Faithfulness", RIGHT),
         ("experiments", "Experiments", RIGHT),
         ("live_detection", "Live detection", RIGHT), ("compare", "Compare", RIGHT),
         ("dataset", "Dataset", RIGHT), ("synthesis", "Synthesis", RIGHT))
IMAGE_FILTER = "Images (" + " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES)) + ")"
WEIGHTS_FILTER = "Weights (" + " ".join(f"*{s}" for s in sorted(WEIGHT_SUFFIXES)) + ");;All files (*)"


def _panel(key: str) -> property:
    return property(lambda window: window.panel_docks.panel(key), doc=f"The {key} panel (built on first use).")


class MainWindow(QMainWindow):
    """Docked panels looking at one session."""

    predictions, feature_maps, filters = _panel("predictions"), _panel("feature_maps"), _panel("filters")
    model_summary, receptive_field = _panel("model_summary"), _panel("receptive_field")
    architecture, gradients, live_detection = _panel("architecture"), _panel("gradients"), _panel("live_detection")
    compare, dataset, synthesis = _panel("compare"), _panel("dataset"), _panel("synthesis")
    faithfulness, experiments = _panel("faithfulness"), _panel("experiments")

    def __init__(self, session: Session, jobs: UiJobs, controller: Controller,
                 settings: QSettings | None = None) -> None:
        super().__init__()
        self.session, self.jobs, self.controller = session, jobs, controller
        self.settings = settings if settings is not None else QSettings("cnnviewer", "cnnviewer")
        self.setWindowTitle("cnnviewer")
        self.resize(1400, 880)   # until restore_settings: the saved size, or most of the screen
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)

        self.messages = MessageLog()
        self.panel_docks = PanelDocks(self, session, lambda key: build_panel(key.replace("_", "-"), session, jobs,
                                                                             controller), self._on_panel_built)
        self.docks: dict[str, QDockWidget] = self.panel_docks.docks
        for key, title, area in DOCKS:
            self.panel_docks.add(key, title, area)
        tabify(self, self.docks)
        self.setCentralWidget(None)
        apply_proportions(self, self.docks)
        self._full_tab_titles = FullTabTitles(self)
        self._default_state = self.saveState()
        self.folder_browser = FolderBrowser(self.open_image, self)
        self._build_status_bar()
        self.intervention_strip = InterventionStrip(self)   # the active knock-outs; hidden while none
        self.intervention_strip.remove_requested.connect(controller.remove_knockout)
        self.intervention_strip.clear_requested.connect(controller.clear_interventions)
        controller.interventions_changed.connect(self.intervention_strip.set_interventions)
        controller.dataset_index = lambda: getattr(self.panel_docks.built("dataset"), "index", None)
        build_menus(self)
        place_strip(self, self.intervention_strip)
        targets = {"live": self.docks["live_detection"], "compare": self.docks["compare"], "dataset": self.docks["dataset"]}
        self._drop_filter = DropFilter(self, self.docks, targets, self.open_paths)

        session.forward_changed.connect(self._on_forward_changed)
        session.forward_failed.connect(self._on_forward_failed)
        controller.image_opened.connect(self._on_image_opened)
        controller.message.connect(self.show_message)
        controller.trust_needed.connect(self._on_trust_needed)
        controller.model_loaded.connect(self._on_model_loaded)
        jobs.busy.connect(self._on_job_busy)
        jobs.progressed.connect(self._on_job_progress)
        jobs.finished.connect(self._on_job_finished)
        self._busy: dict[str, str] = {}
        self.restore_settings()
        self.intervention_strip.set_interventions(session.interventions)   # not the saved state's visibility
        self.checkpoints = CheckpointBrowser(session, jobs, controller, self)   # a run's checkpoint folder
        self.checkpoint_bar = CheckpointBar(self.checkpoints, self)   # after restoreState: hidden at launch
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.checkpoint_bar)

    # ---------------------------------------------------------------- building
    def _on_panel_built(self, key: str, panel: QWidget) -> None:
        """A panel was just built (first shown or first asked for): wire it to the rest of the window."""
        log_panel_messages(key, panel, self.messages.add)   # what panels say is kept in View > Messages too
        if hasattr(panel, "knockout_requested"):   # Feature maps, Architecture: "Knock out" menus
            panel.knockout_requested.connect(self.controller.request_knockout)
        if key == "predictions":   # class maps on the job thread, and the Fully convolutional checkbox
            panel.attach(self.jobs, self.controller.workbench, self.controller.fully_convolutional)
        if key == "compare":   # a checkpoint folder's drift against the checkpoint
            panel.attach_series(self.checkpoints)
        if key == "synthesis":   # facets come from the Dataset panel's folder (none until it was opened)
            panel.dataset_index = lambda: getattr(self.panel_docks.built("dataset"), "index", None)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel("model: loading…")
        self.device_label = QLabel("")
        self.forward_label = QLabel("")
        self.busy_label = QLabel("")   # what runs now; status messages stay readable beside it
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(180)
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, activated=self._on_cancel_clicked)
        for widget in (self.folder_browser, self.model_label, self.device_label, self.forward_label,
                       self.busy_label, self.progress, self.cancel_button):
            bar.addPermanentWidget(widget)

    # ---------------------------------------------------------------- user intent
    def open_paths(self, paths: list[str], live: bool = False, compare: bool = False, dataset: bool = False) -> None:
        """Open dropped or given files, routed by kind and by the panel they landed on (see open_paths)."""
        open_paths(self, paths, live=live, compare=compare, dataset=dataset)

    def open_checkpoints(self, folder: str | Path) -> None:
        """A training run's folder of checkpoints: the strip under the menu moves every panel through them."""
        self.checkpoints.open_folder(folder)

    def open_image(self, path: str | Path) -> None:
        """Make an image file every panel's input, and remember it."""
        self.controller.open_image(path)

    def open_folder(self, folder: str | Path, index: bool = False) -> None:
        """Browse a folder's images (Page Up / Page Down); its first image becomes the input. With
        `index` (File > Open image folder, a drop on Dataset) the Dataset panel indexes it too."""
        folder = Path(folder)
        if not folder.is_dir():    # vanished since it was chosen, or a FIFO / file named as a folder
            self.show_message(f"{folder}: not a folder" + ("" if folder.exists() else " (it no longer exists)"))
            return
        if index:
            self.docks["dataset"].show()
            self.docks["dataset"].raise_()
            self.dataset.open_folder(folder)
        images = image_files(folder) or nested_images(folder)    # a folder of subfolders browses them
        if not images:
            if not index:
                self.show_message(f"{folder.name}: no images in this folder")
            return
        remember_recent(self, str(folder))
        self.folder_browser.open_folder(folder, images)
        self.show_message(f"{folder.name}: {len(images)} images; Page Down / Page Up (or ◀ ▶) step through them")

    def choose_image_folder(self) -> None:
        folder = file_dialogs.existing_folder(self, "Open image folder")
        if folder:
            self.open_folder(folder, index=True)

    def _on_image_opened(self, path: str) -> None:
        if not self.folder_browser.contains(path):   # an image from elsewhere: browsing ends
            self.folder_browser.forget()
            remember_recent(self, path)

    def load_weights(self, path: str | Path, trust: bool = False) -> None:
        """Load a weights file; the current model stays if it fails."""
        self.controller.load_weights(path, trust=trust)

    def choose_image(self) -> None:
        path = file_dialogs.open_file(self, "Open image", IMAGE_FILTER + ";;All files (*)")
        if path:
            self.open_image(path)

    def choose_weights(self) -> None:
        path = file_dialogs.open_file(self, "Load weights", WEIGHTS_FILTER)
        if path:
            self.load_weights(path)

    def choose_architecture_file(self) -> None:
        path = file_dialogs.open_file(self, "Open architecture (Python file)", "Python (*.py)")
        if not path:
            return
        from PySide6.QtWidgets import QInputDialog
        name, ok = QInputDialog.getText(self, "Architecture", "Class or factory function in that file:")
        if ok and name.strip():
            self.controller.load_model(f"{path}:{name.strip()}")

    def choose_model(self) -> None:
        chosen = pick_model(self, self.controller, self.session.model.name if self.session.model else None)
        if chosen:
            self.controller.load_model(chosen)

    def export_current_panel(self) -> None:
        dock = self.current_dock()
        path = file_dialogs.save_file(self, "Export panel as PNG", f"{dock.objectName().removeprefix('dock_')}.png",
                                      "PNG (*.png)")
        if path:
            self.export_dock(dock, path)

    def export_dock(self, dock: QDockWidget, path: str) -> bool:
        """Save what a panel shows now as PNG."""
        ok = dock.widget().grab().save(path, "PNG")
        self.show_message(f"Saved {path}" if ok else f"Could not write {path}")
        return ok

    def current_dock(self) -> QDockWidget:
        """The dock holding keyboard focus, else the tab in front of the big tabbed group."""
        focus = QApplication.focusWidget()
        for dock in self.docks.values():
            if focus is not None and dock.isAncestorOf(focus):
                return dock
        group = [self.docks["feature_maps"], *self.tabifiedDockWidgets(self.docks["feature_maps"])]
        return next((dock for dock in group if on_screen(dock.widget())), self.docks["feature_maps"])

    def reset_layout(self) -> None:
        for dock in self.docks.values():
            dock.setFloating(False)
            dock.show()
        self.restoreState(self._default_state)
        QTimer.singleShot(0, lambda: apply_proportions(self, self.docks))   # for the window's size now

    # ---------------------------------------------------------------- feedback
    def show_message(self, text: str) -> None:
        """On the status bar for a while, and in View > Messages for the session."""
        self.messages.add(text)
        self.statusBar().showMessage(text, 15000)

    def show_message_log(self) -> None:
        dialog = getattr(self, "_message_dialog", None)
        if dialog is None:
            self._message_dialog = dialog = MessageLogDialog(self.messages, self)
        dialog.refresh()
        dialog.show()
        dialog.raise_()

    def _on_model_loaded(self, model) -> None:
        self.model_label.setText(f"model: {window_model_title(model)}")
        self.model_label.setToolTip(model.weights_label)
        self.device_label.setText(f"device: {model.device}" + ("" if model.dtype_name == "float32"
                                                                else f" ({model.dtype_name})"))
        self.settings.setValue("last_model", self.controller.model_spec or "")
        self.settings.setValue("last_weights", model.weights_path or "")
        if model.weights_path:
            remember_recent(self, model.weights_path)
        self.setWindowTitle(f"cnnviewer — {window_model_title(model)}")

    def _on_forward_changed(self, summary) -> None:
        self.forward_label.setText(f"forward: {summary.forward_ms:.0f} ms")

    def _on_forward_failed(self, _message: str) -> None:
        self.forward_label.setText("forward: failed")

    def _on_trust_needed(self, path: str, message: str) -> None:
        if ask_trust(self, path, message):
            self.load_weights(path, trust=True)
        else:
            self.show_message(f"Not loaded: {Path(path).name} was not trusted")

    def _on_job_busy(self, key: str, text: str) -> None:
        self._busy.pop(key, None)   # the latest job goes last: Cancel stops that one
        self._busy[key] = text
        self._show_busy()
        self.progress.setRange(0, 0)

    def _on_job_progress(self, fraction: float, text: str) -> None:
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(fraction * 1000))
        set_elided(self.busy_label, text, BUSY_WIDTH)

    def _on_job_finished(self, key: str) -> None:
        self._busy.pop(key, None)
        self._show_busy()

    def _show_busy(self) -> None:
        """The permanent busy label, progress bar and Cancel (only for loads, which can be long)."""
        set_elided(self.busy_label, " · ".join(f"{text}…" for text in self._busy.values()), BUSY_WIDTH)
        self.busy_label.setVisible(bool(self._busy))
        self.progress.setVisible(bool(self._busy))
        cancellable = self._cancellable()
        self.cancel_button.setVisible(cancellable is not None)
        if cancellable is not None:
            self.cancel_button.setToolTip(f"Stop {self._busy[cancellable].lower()} (Esc); other work goes on")

    def _cancellable(self) -> str | None:
        """The most recently started job that Cancel stops (one at a time, never all at once)."""
        keys = [key for key in self._busy if key in CANCELLABLE]
        return keys[-1] if keys else None

    def _on_cancel_clicked(self) -> None:
        key = self._cancellable()
        if key is None:
            return
        text = self._busy[key]
        self.jobs.cancel(key)
        if self.session.model is None and key == "model":
            self.model_label.setText("model: none")
            self.predictions.clear("No model loaded: choose one with File > Choose model (Ctrl+M).")
            self.show_message("Cancelled. Choose a model with File > Choose model (Ctrl+M).")
        else:
            self.show_message(f"Cancelled: {text}")

    # ---------------------------------------------------------------- settings
    def recent_files(self) -> list[str]:
        return recent_files(self)

    def restore_settings(self) -> None:
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        self._first_launch = not isinstance(geometry, QByteArray)   # sized to the screen when first shown
        state = self.settings.value("window_state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        file_dialogs.set_last_folder(str(self.settings.value("last_folder", "") or ""))
        file_dialogs.set_last_save_folder(str(self.settings.value("last_save_folder", "") or ""))
        self.fit_to_screen()

    def fit_to_screen(self) -> None:
        """Keep the whole window on the screen it opens on (see window_state)."""
        fit_to_screen(self)

    def save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("last_folder", file_dialogs.last_folder())
        self.settings.setValue("last_save_folder", file_dialogs.last_save_folder())
        self.settings.sync()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override: the frame's size is known now
        super().showEvent(event)
        if getattr(self, "_first_launch", False):
            self._first_launch = False
            first_launch_size(self)
            QTimer.singleShot(0, lambda: apply_proportions(self, self.docks))
        self.fit_to_screen()
        self._drop_filter.watch_windows()
        QTimer.singleShot(0, self.bring_floating_docks_forward)

    def bring_floating_docks_forward(self) -> None:
        """Restored floating panels on screen and in front (see window_state)."""
        bring_floating_docks_forward(self, self.docks.values())

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.save_settings()
        stop_everything(self)
        super().closeEvent(event)
