"""Live detection's Capture: the annotated frame and its detections saved, the frame handed to the
other panels, and where the files went said under the picture and on the window's status bar; and a
clicked detection handed to the other panels to explain. Apart from live_detection.py to keep that
module short; it works on the panel's own state."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnviewer.engine.types import DEFAULT_MODEL

if TYPE_CHECKING:
    from cnnviewer.ui.panels.live_detection import LiveDetectionPanel


def capture(panel: LiveDetectionPanel, folder: str | Path) -> Path | None:
    """Save `panel`'s frame as `capture-<time>.png` (annotated) and `.json` (COCO-style) in `folder`;
    the path of the PNG, or None (nothing to capture, or the folder cannot be written: said)."""
    if panel.frame is None:
        return None
    from cnnviewer.engine.detection.scene import save_capture
    from cnnviewer.engine.media.images import from_array
    try:
        saved = save_capture(folder, panel.frame, panel.shown)
    except OSError as error:
        panel.note(f"Could not save the capture: {error}")
        return None
    session, controller = panel._session, panel._controller
    explaining = panel._explanation is not None and session.model is panel._explanation
    if explaining and panel.selected is not None:
        # The model scores one detection of a letterboxed frame: keep explaining that detection,
        # on the captured frame, rather than give the wrapper a raw frame it would misread.
        panel.select_detection(panel.selected, saved.name)
        say_saved(panel, saved, f"the panels keep explaining {panel.selected.label} on it.")
        return saved
    if explaining:   # the explained box is gone from this frame: back to the classifier, and say so
        controller.load_model(controller.model_spec or DEFAULT_MODEL)
    session.set_image(from_array(np.ascontiguousarray(panel.frame.pixels), saved.name))
    say_saved(panel, saved, "its detection is no longer selected, so the panels go back to the classifier with "
              "this frame as their input." if explaining else "the frame is now every panel's input.")
    return saved


def say_saved(panel: LiveDetectionPanel, saved: Path, then: str) -> None:
    """Where the PNG and JSON went, under the picture and on the window's status bar (trial row 33:
    the folder was picked in a dialog that is gone by then, and nothing said it). The status line is
    the very line View > Messages logs for the note, so the log keeps it once."""
    text = f"Saved {saved.name} and {saved.with_suffix('.json').name} in {saved.parent}; {then}"
    panel.note(text)
    panel._controller.message.emit(f"Live detection: {text}")


def explain(panel: LiveDetectionPanel, detection, frame_name: str | None = None) -> None:
    """Make every other panel explain `detection` (its score as class 0), on the model job thread."""
    detector, pixels = panel.result.detector, panel.frame.pixels
    name = frame_name or f"{Path(panel.frame.name).stem}-detection.png"

    def work(_context):
        from cnnviewer.engine.detection.explain import explain_detection
        return explain_detection(detector, detection, pixels, name)

    def done(result) -> None:
        model, image = result
        panel._explanation = model
        panel._controller.show_model_on(model, image, f"Explaining {detection.label} {detection.score:.2f}: "
                                        "every panel now shows this detection's score as class 0")
        panel._session.select(class_index=0)
        panel.note(f"The other panels explain {detection.label} {detection.score:.2f} "
                   f"(gradient views: its score as the target). Load a model to go back.")

    panel._jobs.submit("model", work, on_done=done, on_error=lambda text: panel.note(
        f"Could not explain that detection: {text}"), label=f"Explaining {detection.label}")
