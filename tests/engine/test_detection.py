"""Detectors, thresholds/NMS, overlays and image-sequence sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from cnnviewer.engine.detection import (
    Detection, apply_thresholds, coco_records, draw, frames, make_detector,
)
from cnnviewer.engine.errors import ImageError, ModelError


def test_thresholds_and_nms_change_what_is_kept():
    boxes = [Detection((0, 0, 10, 10), 0.9, "a", 1), Detection((1, 1, 11, 11), 0.8, "a", 1),
             Detection((1, 1, 11, 11), 0.7, "b", 2), Detection((50, 50, 60, 60), 0.3, "a", 1)]
    assert [d.score for d in apply_thresholds(boxes, 0.5, 0.5)] == [0.9, 0.7]        # same-class overlap removed
    assert [d.score for d in apply_thresholds(boxes, 0.5, 0.95)] == [0.9, 0.8, 0.7]  # looser NMS keeps it
    assert [d.score for d in apply_thresholds(boxes, 0.2, 0.5)] == [0.9, 0.7, 0.3]
    assert apply_thresholds(boxes, 0.95, 0.5) == []


def test_image_sequence_and_face_pipeline(tmp_path):
    Image.fromarray(data.astronaut()).save(tmp_path / "1.png")
    Image.fromarray(data.coffee()).save(tmp_path / "2.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    detector = make_detector("mtcnn")
    seen = [(frame.name, len(apply_thresholds(detector.raw(frame.pixels), 0.9, 0.5))) for frame in frames(tmp_path)]
    assert seen == [("1.png", 1), ("2.jpg", 0)]
    frame = next(frames(tmp_path / "1.png"))
    found = apply_thresholds(detector.raw(frame.pixels), 0.9, 0.5)
    overlay = draw(frame.pixels, found)
    assert overlay.shape == frame.pixels.shape and not np.array_equal(overlay, frame.pixels)
    record = coco_records(frame, found)[0]
    assert record["category_name"] == "face" and len(record["bbox"]) == 4 and len(record["keypoints"]) == 15
    with pytest.raises(ImageError):
        list(frames(tmp_path / "missing"))


def test_random_torchvision_detector_runs_the_whole_pipeline():
    torch.manual_seed(0)
    detector = make_detector("ssdlite320_mobilenet_v3_large")
    assert not detector.trained                                   # no COCO weights offline: said so
    raw = detector.raw(data.astronaut())
    assert raw and all(0 <= d.score <= 1 and d.box[2] >= d.box[0] for d in raw)
    strict, loose = apply_thresholds(raw, 0.02, 0.3), apply_thresholds(raw, 0.0, 0.9)
    assert len(strict) < len(loose)
    with pytest.raises(ModelError):
        make_detector("yolo9000")
