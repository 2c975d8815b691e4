"""What the live panel shows for one frame, and what a capture saves: torch-free, GUI-thread safe.

`compose` applies the user's thresholds to a frame's raw detections and draws
the chosen view (detections; before | after NMS; RPN proposals and anchors).
`save_capture` writes the annotated frame and its detections as COCO JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnviewer.engine.detection.overlay import (
    Detection,
    anchors_at,
    apply_thresholds,
    coco_records,
    draw,
)
from cnnviewer.engine.media.sources import Frame

VIEWS = ("Detections", "Before NMS | after NMS", "RPN proposals + anchors (click)")
GAP = 8   # pixels between the two halves of the before/after view
PROPOSAL_COLOUR, ANCHOR_COLOUR = (90, 200, 255), (255, 230, 40)


@dataclass(frozen=True, eq=False)
class Scene:
    """One frame as drawn: the picture, the detections kept, and what to tell the user."""

    picture: np.ndarray            # (H, W', 3) uint8, C-contiguous
    shown: list[Detection]         # after the score threshold and NMS
    note: str = ""


def compose(pixels: np.ndarray, raw: list[Detection], score: float, iou: float, view: int, *,
            internals: dict | None = None, anchor_point: tuple[float, float] | None = None,
            selected: Detection | None = None) -> Scene:
    """Threshold, NMS and draw one frame in view `view` (an index into VIEWS); no model runs."""
    shown = apply_thresholds(raw, score, iou)
    internals = internals or {}
    note = ""
    if view == 1:
        kept = [d for d in raw if d.score >= score]   # each half is shown at half size: labels twice as big
        before = draw(pixels, kept, label_scale=2.0, title=f"before NMS: {len(kept)}")
        gap = np.full((pixels.shape[0], GAP, 3), 40, np.uint8)
        after = draw(pixels, shown, label_scale=2.0, title=f"after NMS: {len(shown)}")
        picture = np.concatenate([before, gap, after], axis=1)
    elif view == 2 and "proposals" in internals:
        picture = draw(pixels, [], boxes=internals["proposals"], box_colour=PROPOSAL_COLOUR)
        anchors = anchors_at(internals, *anchor_point) if anchor_point else []
        if anchors:
            picture = draw(picture, [], boxes=np.concatenate(anchors), box_colour=ANCHOR_COLOUR)
    else:
        if view == 2:
            note = ("this detector has no region proposal network: proposals and anchors belong to the "
                    "two-stage (R-CNN) detectors")
        picture = draw(pixels, shown, highlight=selected)
    return Scene(np.ascontiguousarray(picture), shown, note)


def frame_point(view: int, frame_width: int, column: float) -> float:
    """A click's column in frame pixels (the before | after view shows the frame twice)."""
    return column - (frame_width + GAP) if view == 1 and column >= frame_width + GAP else column


def save_capture(folder: str | Path, frame: Frame, shown: list[Detection]) -> Path:
    """Write `capture-<time>.png` (the annotated frame) and `.json` (COCO-style detections).

    Raises:
        OSError: the folder cannot be written.
    """
    stem = Path(folder) / time.strftime("capture-%Y%m%d-%H%M%S")
    while Path(f"{stem}.png").exists():
        stem = stem.with_name(stem.name + "+")
    Image.fromarray(draw(frame.pixels, shown)).save(f"{stem}.png")
    named = Frame(frame.index, f"{stem.name}.png", frame.pixels, frame.captured)
    Path(f"{stem}.json").write_text(json.dumps(coco_records(named, shown), indent=1), encoding="utf-8")
    return Path(f"{stem}.png")


def status_line(result, shown: list[Detection], score: float, view: int, fps: float,
                latency_ms: float | None, anchors_clicked: bool) -> str:
    """The live panel's one-line report: counts, detector, speed, and what the chosen view shows.

    Args:
        result: the LiveResult on screen (frame, raw detections, detector, timings, internals).
    """
    detector, raw = result.detector, result.raw
    untrained = "" if detector.trained else " (untrained: no COCO weights offline)"
    extra = ""
    if view == 1:
        extra = f" Left: {sum(d.score >= score for d in raw)} before NMS; right: after."
    elif view == 2 and "proposals" in result.internals:
        extra = (f" Top {len(result.internals['proposals'])} RPN proposals (blue)"
                 + ("; anchors at the clicked point (yellow)." if anchors_clicked else "; click to see the anchors there."))
    latency = f"{latency_ms:.0f}" if latency_ms is not None else "–"
    return (f"{result.frame.name}: {len(shown)} shown of {len(raw)} raw, {detector.name}{untrained}. "
            f"{fps:.1f} frames/s, detector {result.detect_ms:.0f} ms, latency {latency} ms (capture → overlay).{extra}")
