"""A training run's folder of checkpoints as the session's model, one checkpoint at a time.

The series (engine.models.checkpoints) lives on the job thread: it is made, read, extended and
measured there only; the GUI keeps the listing (frozen Checkpoint records) and the index shown.
Every load is one job key, so dragging the slider across twenty checkpoints loads the one it
stops on, not twenty. Follow polls the folder with a timer, on the job thread too: a new file
appears once its size and mtime held still across two polls and it reads as a whole file, and a
file written again (Lightning's `last.ckpt`) is read anew the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from cnnviewer.engine.session import Session
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.widgets.controls import on_screen

POLL_MS = 1000   # Follow: a checkpoint is ready within two polls of its last byte


class CheckpointBrowser(QObject):
    """Opens a checkpoint folder, moves the session through it, follows new checkpoints."""

    listed = Signal(object)        # tuple[Checkpoint, ...] in training order (a new listing)
    shown = Signal(int)            # the index every panel shows now
    closed = Signal()              # the series was closed (or another model loaded)
    drift_ready = Signal(object)   # tuple[CheckpointDrift, ...] for the Compare panel
    message = Signal(str)

    def __init__(self, session: Session, jobs: UiJobs, controller: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._controller = session, jobs, controller
        self.folder: Path | None = None
        self.checkpoints: tuple = ()
        self.index: int | None = None            # shown by every panel
        self.drift: tuple = ()                   # the last drift measured (Compare)
        self._series: Any = None                 # engine CheckpointSeries: touched on the job thread only
        self._stamps: dict[str, tuple[int, int]] = {}   # Follow: new files' (size, mtime) at the last poll
        self._polling = False
        self._showing = False
        self._waiting_for: Path | None = None    # opened before the launch model loaded
        self.follow = False
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        controller.model_loaded.connect(self._on_model_loaded)
        self.message.connect(controller.message.emit)

    @property
    def is_open(self) -> bool:
        return self._series is not None

    # ---------------------------------------------------------------- opening
    def open_folder(self, folder: str | Path) -> None:
        """List a folder's checkpoints and show the newest readable one (job thread); a folder with
        none, or none that fits, is one line and changes nothing."""
        folder = Path(folder)
        if not folder.is_dir():
            self.message.emit(f"{folder}: not a folder" + ("" if folder.exists() else " (no such folder)"))
            return
        if self._session.model is None:   # at launch: once the launch model is there (its architecture first)
            self._waiting_for = folder
            return
        base = self._session.model.original if self._session.model is not None else None
        device = self._controller.device

        def work(context):
            from cnnviewer.engine.errors import WeightsError
            from cnnviewer.engine.models.checkpoints import CheckpointSeries, list_checkpoints
            found = list_checkpoints(folder)
            if not found:
                raise WeightsError(f"{folder.name}: no checkpoints (no weights files, nor folders holding one)")
            series = CheckpointSeries(folder, found, base, device=device)
            errors = []
            for index in reversed(range(len(found))):
                if context.cancel.is_set():
                    return None
                try:
                    return series, index, series.model(index)
                except WeightsError as error:
                    errors.append(str(error))
            raise WeightsError(errors[-1] if len(errors) == 1 else f"{folder.name}: no checkpoint loads "
                               f"({errors[-1]})")

        self._jobs.submit("checkpoint", work, on_done=self._on_opened, label=f"Opening checkpoints in {folder.name}",
                          on_error=lambda text: self.message.emit(f"Checkpoints not opened: {text}"))

    def _on_opened(self, result) -> None:
        if result is None:
            return
        series, index, model = result
        self._series, self.folder = series, Path(series.folder)
        self.checkpoints, self._stamps, self.drift = tuple(series.checkpoints), {}, ()
        self.listed.emit(self.checkpoints)
        self._show_model(index, model)
        if self.follow:
            self.timer.start()

    def _on_model_loaded(self, _model) -> None:
        """Another model was chosen: the series ends (its strip would move a model no longer shown)."""
        if self._waiting_for is not None:
            folder, self._waiting_for = self._waiting_for, None
            self.open_folder(folder)
        elif self.is_open and not self._showing:
            self.close()

    # ---------------------------------------------------------------- moving
    def show(self, index: int) -> None:
        """Make checkpoint `index` every panel's model (latest request wins)."""
        if self._series is None or not 0 <= index < len(self.checkpoints):
            return
        series, checkpoint = self._series, self.checkpoints[index]

        def work(_context):
            return series.model([c.path for c in series.checkpoints].index(checkpoint.path))

        def done(model) -> None:
            paths = [c.path for c in self.checkpoints]
            if series is self._series and checkpoint.path in paths:   # still listed (Follow may have moved it)
                self._show_model(paths.index(checkpoint.path), model)

        def failed(text: str) -> None:
            self.message.emit(f"{checkpoint.label}: {text}")
            if self.index is not None:
                self.shown.emit(self.index)      # the strip goes back to what every panel shows

        self._jobs.submit("checkpoint", work, on_done=done, on_error=failed, label=f"Loading {checkpoint.label}")

    def _show_model(self, index: int, model) -> None:
        if self._series is None:
            return
        self.index = index
        checkpoint = self.checkpoints[index]
        note = f"{checkpoint.label} ({index + 1} of {len(self.checkpoints)}): {checkpoint.name}"
        current = self._session.model
        self._showing = True
        try:
            if current is not None and (current.layer_names, current.layer_types) == (model.layer_names,
                                                                                      model.layer_types):
                self._controller.show_checkpoint(model, note)
            else:   # the folder holds another architecture than the one shown: a new model, as any load
                self._controller.show_model_on(model, self._session.image, note)
        finally:
            self._showing = False
        self.shown.emit(index)

    def step(self, delta: int) -> None:
        """The previous (-1) or next (+1) checkpoint."""
        if self.index is not None:
            self.show(max(0, min(len(self.checkpoints) - 1, self.index + delta)))

    def close(self) -> None:
        """End the series; the model shown stays."""
        self._series, self.folder, self.checkpoints, self.index, self.drift = None, None, (), None, ()
        self.timer.stop()
        self._jobs.cancel("checkpoint-drift")
        self.closed.emit()

    # ---------------------------------------------------------------- following
    def set_follow(self, on: bool) -> None:
        """Poll for new checkpoints; while on and the last one is shown, a new last one is shown."""
        self.follow = bool(on)
        if self.follow and self.is_open:
            self.poll()
            self.timer.start()
        else:
            self.timer.stop()

    def poll(self) -> None:
        """One look at the folder (job thread): new files that are complete join the series."""
        if self._series is None or self._polling:
            return
        series, stamps, folder = self._series, dict(self._stamps), self.folder

        def work(_context):
            from cnnviewer.engine.models.checkpoints import complete, describe_entry, new_entries
            known = {c.path for c in series.checkpoints}
            added, seen, replaced = [], {}, set()
            candidates = [(None, entry, weights) for entry, weights in new_entries(folder, known)]
            for old, entry, weights in candidates + series.rewritten():
                ready, stamp = complete(weights, stamps.get(str(weights)))
                if ready and old is None:
                    added.append(series.add(describe_entry(entry, weights)))
                elif ready:      # written again: read anew when it is shown
                    series.replace(describe_entry(entry, weights))
                    replaced.add(str(weights))
                elif stamp is not None:
                    seen[str(weights)] = stamp
            return series, tuple(series.checkpoints), seen, bool(added or replaced), replaced

        def failed(text: str) -> None:
            self._polling = False
            self.message.emit(f"Follow: {text}")

        self._polling = True
        self._jobs.submit("checkpoint-poll", work, on_done=self._on_polled, on_error=failed)

    def _on_polled(self, result) -> None:
        self._polling = False
        series, listing, seen, changed, replaced = result
        if series is not self._series:
            return
        self._stamps = seen
        if not changed:
            return
        on_last = self.index is not None and self.index == len(self.checkpoints) - 1
        shown = self.checkpoints[self.index].path if self.index is not None else None
        self.checkpoints = listing
        if shown is not None:
            self.index = [c.path for c in listing].index(shown)
        self.listed.emit(listing)
        if shown is not None:
            self.shown.emit(self.index)
        self.message.emit(f"{self.folder.name}: {len(listing)} checkpoints"
                          + (f"; {len(replaced)} written again" if replaced else ""))
        if self.follow and on_last and self.index != len(listing) - 1:
            self.show(len(listing) - 1)
        elif shown in replaced:       # the checkpoint on screen was written again: show the new one
            self.show(self.index)

    # ---------------------------------------------------------------- drift
    def request_drift(self, panel=None) -> None:
        """Measure every checkpoint's drift on the session's image at the selected layer (job thread)."""
        image, layer, series = self._session.image, self._session.selection.layer, self._series
        if series is None or image is None or (panel is not None and not on_screen(panel)):
            return
        count = len(self.checkpoints)

        def work(context):
            from cnnviewer.engine.models.checkpoint_drift import series_drift
            return series, tuple(series_drift(series, image, layer, cancel=context.cancel, progress=context.report))

        def done(result) -> None:
            measured_series, drift = result
            if measured_series is self._series and len(drift) == count:
                self.drift = drift
                self.drift_ready.emit(drift)

        self._jobs.submit("checkpoint-drift", work, on_done=done, label="Measuring drift across checkpoints",
                          on_error=lambda text: self.message.emit(f"Drift not measured: {text}"))
