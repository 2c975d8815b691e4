"""The Synthesis panel's job-thread work: building a run's engine, and writing a run to disk.

Each function reads what it needs on the GUI thread and returns a closure for the job thread,
so the panel never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def start_job(method: str, model, target, settings, pixels, style_inputs, index, extras: dict[str, int]):
    """A job-thread function returning (engine, facet examples) for a new run of `method`."""
    def start(_context):
        if method == "facets":
            from cnnviewer.engine.synthesis.facets import facet_ascent, find_facets
            found = find_facets(index, model, target, facets=extras["facets"], top=extras["top"],
                                nearest=extras["nearest"], seed=settings.seed)
            examples = [(facet, index.thumbnails(members[:4]), [index.path(r).name for r in members[:4]])
                        for facet, members in enumerate(found.members)]
            return facet_ascent(model, target, found, settings), examples
        from cnnviewer.engine.synthesis.recipe import make_engine
        if method == "style":
            return make_engine(method, model, None, settings, style_inputs[0], style_inputs[1]), []
        return make_engine(method, model, target, settings, pixels), []

    return start


def save_job(path: str, panel):
    """A job-thread function writing `panel`'s run to `path` and its recipe beside it (returns the JSON path).

    Everything it needs is read now, on the GUI thread."""
    engine, model, target, method = panel.engine, panel._session.model, panel.run_target, panel.method_of_run
    start, source = panel.start_picture if method in ("deepdream", "style") else (None, None)
    style_path = panel.style_file
    index = panel.dataset_index() if method == "facets" else None
    extras = {name: spin.value() for name, spin in panel.form.extras.items()}

    def work(_context):
        from cnnviewer.engine.dataset.index import weights_digest
        from cnnviewer.engine.synthesis.recipe import record, save
        nonlocal source
        if start is not None and source is None:    # a sample or camera frame: kept beside the result
            from PIL import Image

            from cnnviewer.engine.media.files import atomic_output
            source = str(Path(path).with_suffix(".start.png"))
            with atomic_output(source) as temporary:    # never a truncated start picture the recipe names
                Image.fromarray(np.ascontiguousarray(start[..., :3])).save(temporary, format="PNG")
        recipe = record(method, target, engine.settings, model, weights_digest(model), engine, source, style_path)
        if index is not None:     # what `cnnviewer synthesize --from` needs to find the same facets
            recipe.update(folder=str(index.folder), **extras, objectives=[float(v) for v in engine.objective()])
        return str(save(path, np.concatenate(list(engine.pictures()), axis=1), recipe))

    return work
