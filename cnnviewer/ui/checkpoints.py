"""A training run's folder of checkpoints as the session's model, one checkpoint at a time.

The series (engine.models.checkpoints) lives on the job thread: it is made, read, extended and
measured there only; the GUI keeps the listing (frozen Checkpoint records) and the index shown.
Every move is one job key, so dragging the slider across twenty checkpoints loads the one it
stops on, not twenty; opening a folder is another key, so a move or a Follow poll of the old
folder never drops the new folder's opening. The drift plot is measured a checkpoint or so per job
(the rest resubmitted behind whatever waits), so a slider move never waits behind a whole pass. Follow polls the folder with a timer, on the job thread too: a new file
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
    follow_changed = Signal(bool)  # Follow turned off by the browser itself (the folder is gone)

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
        self._opening: Path | None = None        # a folder whose opening job runs
        self._lost: str | None = None            # Follow: the checkpoint on screen whose file was deleted
        self._loads = 0                          # other models loaded: an opening asked before one is stale
        self._drift_memo: dict = {}              # the job thread's DriftCache, per series (never touched here)
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
        device, loads = self._controller.device, self._loads
        self._opening = folder
        self.timer.stop()                       # the old folder is not polled while another opens
        self._jobs.cancel("checkpoint-poll")
        self._polling = False

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
                    return series, index, series.model(index), loads
                except WeightsError as error:
                    errors.append(str(error))
            raise WeightsError(errors[-1] if len(errors) == 1 else f"{folder.name}: no checkpoint loads "
                               f"({errors[-1]})")

        def failed(text: str) -> None:
            self._opening = None
            self.message.emit(f"Checkpoints not opened: {text}")
            if self.follow and self.is_open:   # the folder still open goes on being followed
                self.timer.start()

        self._jobs.submit("checkpoint-open", work, on_done=self._on_opened, on_error=failed,
                          label=f"Opening checkpoints in {folder.name}")

    def _on_opened(self, result) -> None:
        self._opening = None
        if result is None:
            return
        series, index, model, loads = result
        if loads != self._loads:   # another model was loaded since the folder was asked for: it stays
            self.message.emit(f"{Path(series.folder).name}: not opened (another model was loaded meanwhile)")
            return
        self._jobs.cancel("checkpoint")        # a move in the old folder, still pending, must not land now
        self._series, self.folder = series, Path(series.folder)
        self.checkpoints, self._stamps, self.drift, self._drift_memo = tuple(series.checkpoints), {}, (), {}
        self.listed.emit(self.checkpoints)
        self._show_model(index, model)
        if self.follow:
            self.timer.start()

    def _on_model_loaded(self, _model) -> None:
        """Another model was chosen: the series ends (its strip would move a model no longer shown)."""
        if self._waiting_for is not None:
            folder, self._waiting_for = self._waiting_for, None
            self.open_folder(folder)
        elif not self._showing:
            self._loads += 1
            if self._opening is not None:
                self._opening = None
                self._jobs.cancel("checkpoint-open")
            if self.is_open:
                self.close()

    # ---------------------------------------------------------------- moving
    def show(self, index: int) -> None:
        """Make checkpoint `index` every panel's model (latest request wins)."""
        if self._series is None or not 0 <= index < len(self.checkpoints):
            return
        series, checkpoint = self._series, self.checkpoints[index]
        # The only models that can be on screen while this job runs: the one shown now, or this
        # job's own result (a later move supersedes this one's, and no earlier move's lands once
        # this is submitted), so the series may hand any module over but the one shown now.
        shown = self.checkpoints[self.index].path if self.index is not None else None

        def work(context):
            from cnnviewer.engine.errors import WeightsError
            paths = [c.path for c in series.checkpoints]
            if context.cancel.is_set():
                return None
            if checkpoint.path not in paths:
                raise WeightsError(f"{checkpoint.name} is no longer in the folder")
            return series.model(paths.index(checkpoint.path), shown=shown, cancel=context.cancel)

        def done(model) -> None:
            paths = [c.path for c in self.checkpoints]
            if model is not None and series is self._series and checkpoint.path in paths:   # still listed (Follow may have moved it)
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
        self._drift_memo = {}
        for key in ("checkpoint", "checkpoint-poll", "checkpoint-drift"):
            self._jobs.cancel(key)
        self._polling = False
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
        if self._series is None or self._polling or self._opening is not None:
            return
        series, stamps, folder = self._series, dict(self._stamps), self.folder
        shown = self.checkpoints[self.index].path if self.index is not None else None

        def work(_context):
            from cnnviewer.engine.models.checkpoints import complete, describe_entry, new_entries
            candidates = [(None, entry, weights) for entry, weights in new_entries(folder, set())]   # raises: gone
            gone = series.vanished(keep=shown)
            lost = shown if shown is not None and not Path(shown).is_file() else None   # the one on screen
            known = {c.path for c in series.checkpoints}
            added, seen, replaced = [], {}, set()
            candidates = [c for c in candidates if str(c[2]) not in known]
            for old, entry, weights in candidates + series.rewritten():
                ready, stamp = complete(weights, stamps.get(str(weights)))
                if ready and old is None:
                    added.append(series.add(describe_entry(entry, weights)))
                elif ready:      # written again: read anew when it is shown
                    series.replace(describe_entry(entry, weights))
                    replaced.add(str(weights))
                elif stamp is not None:
                    seen[str(weights)] = stamp
            return series, tuple(series.checkpoints), seen, bool(added or replaced or gone), replaced, gone, lost

        def failed(text: str) -> None:
            self._polling = False
            if series is self._series:   # the folder is gone (deleted, unmounted): say it once and stop
                self.message.emit(f"Follow stopped: {text}")
                self.set_follow(False)
                self.follow_changed.emit(False)

        self._polling = True
        self._jobs.submit("checkpoint-poll", work, on_done=self._on_polled, on_error=failed)

    def _on_polled(self, result) -> None:
        self._polling = False
        series, listing, seen, changed, replaced, gone, lost = result
        if series is not self._series:
            return
        self._stamps = seen
        shown = self.checkpoints[self.index].path if self.index is not None else None
        if lost is not None and lost == shown and lost != self._lost:
            self._lost = lost
            self.message.emit(f"{Path(lost).name} was deleted from the folder: it stays shown until you "
                              "move to another checkpoint")
        if not changed:
            return
        on_last = self.index is not None and self.index == len(self.checkpoints) - 1
        if not listing:
            self.message.emit(f"{self.folder.name}: every checkpoint was deleted; the model shown stays")
            self.close()
            return
        paths = [c.path for c in listing]
        moved = shown is not None and shown not in paths   # deleted while this poll ran: its neighbour
        self.checkpoints = listing
        if shown is not None:
            self.index = min(self.index, len(listing) - 1) if moved else paths.index(shown)
        self.listed.emit(listing)
        if shown is not None:
            self.shown.emit(self.index)
        self.message.emit(f"{self.folder.name}: {len(listing)} checkpoints"
                          + (f"; {len(replaced)} written again" if replaced else "")
                          + (f"; {len(gone)} deleted from the folder, no longer listed" if gone else ""))
        if moved:
            self.message.emit(f"{Path(shown).name} was deleted: showing {listing[self.index].label}")
            self.show(self.index)
        elif self.follow and on_last and self.index != len(listing) - 1:
            self.show(len(listing) - 1)
        elif shown in replaced:       # the checkpoint on screen was written again: show the new one
            self.show(self.index)

    # ---------------------------------------------------------------- drift
    def request_drift(self, panel=None) -> None:
        """Measure every checkpoint's drift on the session's image at the selected layer (job thread)."""
        image, layer, series = self._session.image, self._session.selection.layer, self._series
        if series is None or image is None or (panel is not None and not on_screen(panel)):
            return
        count, memo = len(self.checkpoints), self._drift_memo

        def work(context):
            from cnnviewer.engine.models.checkpoint_drift import DriftCache, series_drift
            if memo.get("series") is not series:
                memo.update(series=series, cache=DriftCache())
            cache, total, rows = memo["cache"], len(series.checkpoints), []
            reads = cache.reads
            for row in series_drift(series, image, layer, cancel=context.cancel, progress=context.report, cache=cache):
                rows.append(row)
                if cache.reads > reads and len(rows) < total:   # one measured: the jobs waiting go first
                    return series, None
            return series, tuple(rows)

        def done(result) -> None:
            measured_series, drift = result
            if measured_series is self._series and drift is None:   # the rest, behind what waits
                self.request_drift(panel)
            elif measured_series is self._series and len(drift) == count:
                self.drift = drift
                self.drift_ready.emit(drift)

        self._jobs.submit("checkpoint-drift", work, on_done=done, label="Measuring drift across checkpoints",
                          on_error=lambda text: self.message.emit(f"Drift not measured: {text}"))
