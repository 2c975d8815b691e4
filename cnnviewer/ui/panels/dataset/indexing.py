"""The Dataset panel's indexing: planned, run in slices on the job thread, paused and resumed, and
its status shown. A mixin of DatasetPanel (it uses the panel's widgets and session)."""

from __future__ import annotations

import os
from pathlib import Path

from cnnviewer.engine.dataset.names import LOGITS
from cnnviewer.engine.dataset.progress import RateMeter
from cnnviewer.ui.main_thread import Dispatcher

SLICE_SECONDS = 0.25       # indexing holds the job thread this long at a time
START = ("To start, drop a folder of images on this panel or use File > Open image folder: it is indexed for "
         "the current model, then the images where the selected unit fires most show here.")


class IndexingMixin:
    """Builds the panel's index (`self.index`) for the session's model, a slice at a time."""

    def start_indexing(self, plan_only: bool = False) -> None:
        """Plan the build (what is new, what a checkpoint or an old index already holds), then run it."""
        model, folder = self._session.model, self.folder
        if model is None or folder is None:
            return
        model = model.original      # knock-outs change no index: the folder is the intact model's
        layers = self._layers_for(model)
        workers = 1 if (os.cpu_count() or 1) >= 2 else 0

        waiting = Dispatcher.shared().wrap(self._show_busy)   # another process indexes it: say so here

        def work(context):
            from cnnviewer.engine.dataset.build import IndexBuild
            from cnnviewer.engine.dataset.index import default_directory
            from cnnviewer.engine.dataset.partial import open_checkpoint
            build = IndexBuild(folder, model, default_directory(folder, model), layers=layers,
                               workers=workers, mp_context="spawn", batch_size=16, waiting=waiting,
                               cancel=context.cancel)
            # Planning moved a paused build's checkpoint to .resume (kept only when it fits this build).
            return build, open_checkpoint(build.directory) if plan_only and not build.finished else None

        def planned(result) -> None:
            build, partial = result
            self._build = build
            if build.unchanged or build.finished:
                self._finish()
            elif plan_only:
                self._show_waiting(build, partial)
            else:
                self._run_slice()

        self._jobs.submit("dataset_open", work, on_done=planned, on_error=self._show_failure)

    def _layers_for(self, model) -> list[str] | None:
        if not self._extra_layers:
            return None
        from_index = self.index.layers if self.index is not None else None
        return list(dict.fromkeys([*(from_index or []), *self._extra_layers]))

    def _run_slice(self) -> None:
        build = self._build
        if build is None:
            return
        self._show_progress(build)

        def work(context):
            return build.run(seconds=SLICE_SECONDS, cancel=context.cancel), build.done, build.total

        def sliced(result) -> None:
            finished, _done, _total = result
            if self._build is not build:
                return
            if finished:
                self._finish()
            else:
                self._run_slice()

        self._jobs.submit("dataset_index", work, on_done=sliced, on_error=self._show_failure)

    def _finish(self) -> None:
        build = self._build
        self._jobs.submit("dataset_finish", lambda _context: build.finish(), on_error=self._show_failure,
                          on_done=lambda index: self._on_indexed(index, build.read))

    def cancel_indexing(self) -> None:
        """Stop indexing; what was computed is kept and Resume goes on from there. Said at once: the
        slice running now and the checkpoint take a few seconds on a loaded machine."""
        if self._build is not None and self.folder is not None:
            self.cancel_button.setEnabled(False)
            self.progress.setFormat("Cancelling…")
            self.folder_label.setText(f"<b>{self.folder.name}/</b>: cancelling… (saving what was indexed)")
        elif self.folder is not None:       # still planning, maybe waiting for another process's build
            self.cancel_button.setVisible(False)
            self.folder_label.setText(f"<b>{self.folder.name}/</b>: not indexed (stopped waiting); "
                                      "open the folder again to index it")
        self._stop_build(show_paused=True)

    def _stop_build(self, show_paused: bool) -> None:
        build, self._build = self._build, None
        self._jobs.cancel("dataset_open")          # a plan waiting for another process's lock stops waiting
        self._jobs.cancel("dataset_index")
        if build is not None:
            def pause(_context):
                build.checkpoint()
                build.close()
                from cnnviewer.engine.dataset.partial import open_checkpoint
                return build.done, build.total, open_checkpoint(build.directory) if show_paused else None
            self._jobs.submit(f"dataset_pause_{id(build)}", pause,
                              on_done=lambda counts: show_paused and self._show_paused(*counts))

    def _on_indexed(self, index, read: int) -> None:
        self.index, self._build = index, None
        manifest = index.manifest
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self.index_button.setVisible(False)
        read = f"; {read:,} read in {manifest['seconds']:.0f} s" if read else " (its index was up to date)"
        self.folder_label.setText(f"<b>{self.folder.name}/</b>: {len(index.rows):,} images indexed for "
                                  f"{manifest['model']}{read}")
        self._show_index(index)

    def _show_partial(self, partial, done: int, total: int) -> None:
        """A paused build's rows browsable as they are (Cancel keeps what was done), said to be partial.
        A finished index on screen (a layer being added to it) stays instead."""
        from cnnviewer.engine.dataset.partial import is_partial
        if partial is None or not (self.index is None or is_partial(self.index)):
            return
        self.index = partial
        self._show_index(partial)

    def _show_index(self, index) -> None:
        """Point the three tabs at `index` (finished, or a paused build's rows, said so on each tab)."""
        from cnnviewer.engine.dataset.partial import paused_note
        self.top_tab.paused = self.neighbours_tab.paused = self.map_tab.paused = paused_note(index)
        self._show_skipped(index.skipped)
        from cnnviewer.engine.dataset.index import retrieval_layer
        layers = [name for name in index.layers if name != LOGITS]
        for tab in (self.neighbours_tab, self.map_tab):
            tab.set_layers(layers, default=retrieval_layer(index) if layers else None)
        self.map_tab.set_index(index, self._session.model.original if self._session.model else None)
        self.refresh()

    # ---------------------------------------------------------------- status
    def _show_progress(self, build) -> None:
        self.cancel_button.setEnabled(True)
        from_meter = getattr(self, "_meter", None)
        if from_meter is None or from_meter[0] is not build:
            self._meter = from_meter = (build, RateMeter())
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.index_button.setVisible(False)
        self.progress.setValue(int(1000 * build.done / max(build.total, 1)))
        text = from_meter[1](build.done, build.total)
        self.progress.setFormat(f"{build.done / max(build.total, 1):.0%}")
        self.folder_label.setText(f"<b>{self.folder.name}/</b>: indexing for {build.model.name} — {text}")

    def _show_waiting(self, build, partial=None) -> None:
        self._build = None
        self.index_button.setText("Resume" if build.done else "Index")
        self.index_button.setVisible(True)
        self.folder_label.setText(f"<b>{self.folder.name}/</b>: {build.total - build.done:,} of {build.total:,} "
                                  f"images still to index for {build.model.name}")
        if partial is not None:             # a build paused days ago: its rows are browsable meanwhile
            self._show_partial(partial, build.done, build.total)
        elif self.index is None:
            self.top_tab.clear(f"{self.index_button.text()} to index the folder for {build.model.name}: the top "
                               "images, neighbours and map appear once the index is finished.")
        build.close()

    def _show_paused(self, done: int, total: int, partial=None) -> None:
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self.index_button.setText("Resume")
        self.index_button.setVisible(True)
        self.folder_label.setText(f"<b>{self.folder.name}/</b>: paused at {done:,} of {total:,} images; "
                                  "Resume goes on from there")
        if partial is not None:
            self._show_partial(partial, done, total)
        elif self.index is None:           # (a layer being added keeps the finished index on screen)
            self.clear_views(f"Indexing is paused at {done:,} of {total:,} images: the top images, neighbours "
                             "and map appear once the index is finished. Resume finishes it (nothing is read twice).")

    def _show_busy(self, text: str) -> None:
        """Another process (a command-line `index`) holds the folder's lock: planning waits for it."""
        if self.folder is not None:
            self.folder_label.setText(f"<b>{self.folder.name}/</b>: {text.split('; ')[0].split(' is ')[-1]}; "
                                      "waiting for it to finish (Cancel stops waiting)")
            self.cancel_button.setVisible(True)
            self.cancel_button.setEnabled(True)

    def _show_failure(self, text: str) -> None:
        self._build = None
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        name = f"<b>{self.folder.name}/</b>: " if self.folder else ""
        self.folder_label.setText(f"{name}not indexed: {text}")

    def _show_skipped(self, skipped: list[tuple[str, str]]) -> None:
        self.skipped_list.clear()
        self.skipped_list.addItems([reason if reason.startswith(Path(path).name) else f"{path}: {reason}"
                                    for path, reason in skipped])
        self.skipped_button.setText(f"{len(skipped)} unreadable ▾")
        self.skipped_button.setToolTip("Files that could not be read (skipped): show the list with the reasons")
        self.skipped_button.setVisible(bool(skipped))
        self.skipped_list.setVisible(bool(skipped) and self.skipped_button.isChecked())

    def _on_model_changed(self, model) -> None:
        """Another model: its own index of the folder (reopened when there is one; else a button).
        A build running for the old model is checkpointed, so coming back to it resumes. Knock-outs
        added or removed are not another model: the intact model's index stays."""
        if getattr(self, "_indexed_model", None) is model.original:
            return
        self._indexed_model = model.original
        self._stop_build(show_paused=False)
        self.index = None
        self.clear_views(f"The index of this folder for {model.name} is being looked for…" if self.folder else START)
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        if self.folder is not None:
            self.start_indexing(plan_only=True)

