"""Detections as data and pictures, torch-free: thresholds and per-class NMS, drawing, COCO records.

Everything here is numpy and Pillow, so the GUI thread can refilter and redraw
the last frame at once when a slider moves, without touching torch. The
detectors (detectors.py) produce `Detection`s; this module does the rest.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnviewer.engine.media.sources import Frame

# COCO person keypoints: pairs of indices into torchvision's 17 keypoint names.
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
                 (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))


# The score a box needs to be shown, per detector, from its own reference settings.
# MTCNN: O-Net's published cut is 0.7, but on a 640x480 photo sequence a torso
# scored 0.67-0.81 as a face in some frames while real faces score above 0.95.
# torchvision's detectors: 0.5, the threshold of its detection tutorials.
DEFAULT_SCORES = {"mtcnn": 0.9}
DEFAULT_SCORE = 0.5


def default_score(detector: str) -> float:
    """The score threshold a detector starts with (the user's slider moves it)."""
    return DEFAULT_SCORES.get(detector, DEFAULT_SCORE)


@dataclass(frozen=True, eq=False)
class Detection:
    """One box in image pixels."""

    box: tuple[float, float, float, float]        # x1, y1, x2, y2
    score: float
    label: str
    category: int = 1
    points: tuple[tuple[float, float], ...] = ()  # landmarks / keypoints (x, y)
    skeleton: tuple[tuple[int, int], ...] = ()    # pairs of `points` joined by a line
    mask: np.ndarray | None = None                # bool, covering the box's whole-pixel bounds


def anchors_at(internals: dict, x: float, y: float) -> list[np.ndarray]:
    """The RPN's anchors centred nearest frame pixel (x, y), one (A, 4) array per pyramid level."""
    if "anchor_levels" not in internals:
        return []
    scale_y, scale_x = internals["scale"]
    column, row = x / scale_x, y / scale_y                     # in the resized image the model saw
    found = []
    for stride_y, stride_x, base in internals["anchor_levels"]:
        centre_x, centre_y = round(column / stride_x) * stride_x, round(row / stride_y) * stride_y
        anchors = base + np.array([centre_x, centre_y, centre_x, centre_y], dtype=base.dtype)
        found.append(anchors * np.array([scale_x, scale_y, scale_x, scale_y], dtype=base.dtype))
    return found


def pixel_bounds(box, width: int, height: int) -> tuple[int, int, int, int]:
    """A box's whole-pixel bounds, clipped to the frame (used for mask crops)."""
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    return x1, y1, max(x1, min(width, int(np.ceil(box[2])))), max(y1, min(height, int(np.ceil(box[3]))))


def apply_thresholds(detections: list[Detection], score: float, iou: float) -> list[Detection]:
    """Keep boxes scoring at least `score`, then per-class NMS at `iou`, best first.

    Same result as torchvision's `batched_nms` (checked against it in the tests),
    in numpy: at most a few hundred boxes, and no torch on the GUI thread.
    """
    kept = [d for d in detections if d.score >= score]
    if not kept:
        return []
    boxes = np.array([d.box for d in kept], dtype=np.float64)
    scores = np.array([d.score for d in kept], dtype=np.float64)
    classes = np.array([d.category for d in kept])
    return [kept[i] for i in batched_nms(boxes, scores, classes, iou)]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> list[int]:
    """Indices of the boxes greedy NMS keeps within each class, in decreasing score order.

    Args:
        boxes: (N, 4) x1, y1, x2, y2.  scores: (N,).  classes: (N,) integer labels.
        iou: a box is dropped when its IoU with a kept, higher-scoring box of its class exceeds this.
    """
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        width = np.clip(np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]), 0, None)
        height = np.clip(np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]), 0, None)
        inter = width * height
        union = areas[i] + areas - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        suppressed |= (overlap > iou) & (classes == classes[i])
    return keep


PALETTE = ((255, 64, 64), (64, 160, 255), (255, 200, 40), (180, 90, 255), (40, 220, 160), (255, 120, 200),
           (140, 220, 40), (255, 150, 60))


def colour_of(category: int) -> tuple[int, int, int]:
    """A stable colour per class, so the same class keeps its colour from frame to frame."""
    return PALETTE[category % len(PALETTE)]


def draw(pixels: np.ndarray, detections: list[Detection], *, highlight: Detection | None = None,
         boxes: np.ndarray | None = None, box_colour=(255, 255, 255), label_scale: float = 1.0,
         title: str = "") -> np.ndarray:
    """The frame with masks, boxes, labels with scores, keypoints and skeletons.

    `boxes` are extra outlines drawn thin underneath (RPN proposals, anchors);
    `highlight` is drawn thicker (the box being explained). `label_scale` enlarges the labels of a
    frame shown smaller than usual (the before | after view halves it); `title` names the picture
    on a dark tab at its top-left corner.
    """
    frame = np.asarray(pixels)
    if any(d.mask is not None for d in detections):
        frame = frame.copy()
        for d in detections:
            if d.mask is not None and d.mask.size:
                x1, y1, x2, y2 = pixel_bounds(d.box, frame.shape[1], frame.shape[0])
                region = frame[y1:y2, x1:x2]
                tinted = (region * 0.5 + np.array(colour_of(d.category)) * 0.5).astype(np.uint8)
                region[d.mask[:y2 - y1, :x2 - x1]] = tinted[d.mask[:y2 - y1, :x2 - x1]]
    image = Image.fromarray(frame)
    pen = ImageDraw.Draw(image)
    font = _label_font(frame.shape[0], label_scale)
    for box in ([] if boxes is None else boxes):
        pen.rectangle(tuple(float(v) for v in box), outline=box_colour, width=1)
    for d in detections:
        colour = colour_of(d.category)
        pen.rectangle(d.box, outline=colour, width=4 if d is highlight else 2)
        _label(pen, d, colour, font)
        for a, b in d.skeleton:
            if a < len(d.points) and b < len(d.points):
                pen.line((d.points[a], d.points[b]), fill=(64, 255, 64), width=2)
        for x, y in d.points:
            pen.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(64, 255, 64))
    if title:
        left, top, right, bottom = pen.textbbox((0, 0), title, font=font)
        pen.rectangle((0, 0, right - left + 10, bottom - top + 8), fill=(20, 20, 24))
        pen.text((5 - left, 4 - top), title, fill=(255, 255, 255), font=font)
    return np.asarray(image)


@functools.lru_cache(maxsize=8)
def _label_font(frame_height: int, scale: float = 1.0):
    """A label font that stays readable on big frames and small ones (FreeType when Pillow has it);
    `scale` for a frame shown at 1/scale of its size."""
    size = int(min(28, max(11, frame_height / 36)) * scale)
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):   # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label(pen: ImageDraw.ImageDraw, d: Detection, colour: tuple[int, int, int], font) -> None:
    """`label score` on a filled tab in the box's colour, above the box (inside it at the frame's top)."""
    text = f"{d.label} {d.score:.2f}"
    left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
    width, height = right - left + 6, bottom - top + 4
    x = max(0.0, d.box[0] - 1)
    y = d.box[1] - height if d.box[1] - height >= 0 else d.box[1]
    pen.rectangle((x, y, x + width, y + height), fill=colour)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    pen.text((x + 3 - left, y + 2 - top), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255), font=font)


def detection_at(detections: list[Detection], x: float, y: float) -> Detection | None:
    """The smallest box containing (x, y): the one a click most likely means."""
    inside = [d for d in detections if d.box[0] <= x <= d.box[2] and d.box[1] <= y <= d.box[3]]
    return min(inside, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), default=None)


def coco_records(frame: Frame, detections: list[Detection]) -> list[dict]:
    """COCO-style results: bbox as [x, y, width, height]."""
    return [{"image_id": frame.index, "file_name": frame.name, "category_id": d.category,
             "category_name": d.label, "score": round(d.score, 5),
             "bbox": [round(d.box[0], 2), round(d.box[1], 2), round(d.box[2] - d.box[0], 2),
                      round(d.box[3] - d.box[1], 2)],
             **({"keypoints": [round(v, 2) for point in d.points for v in (*point, 2)]} if d.points else {}),
             **({"mask_area": int(d.mask.sum())} if d.mask is not None else {})}
            for d in detections]
