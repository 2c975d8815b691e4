"""Detectors, thresholds/NMS, overlays (masks, skeletons, proposals) and anchors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from cnnviewer.engine.detection.detectors import (
    Detection,
    anchors_at,
    apply_thresholds,
    coco_records,
    detection_at,
    draw,
    make_detector,
)
from cnnviewer.engine.errors import ModelError, WeightsError
from cnnviewer.engine.media.sources import Frame

FRAME = np.asarray(Image.fromarray(data.astronaut()).resize((320, 240)))


def test_thresholds_and_nms_change_what_is_kept():
    boxes = [Detection((0, 0, 10, 10), 0.9, "a", 1), Detection((1, 1, 11, 11), 0.8, "a", 1),
             Detection((1, 1, 11, 11), 0.7, "b", 2), Detection((50, 50, 60, 60), 0.3, "a", 1)]
    assert [d.score for d in apply_thresholds(boxes, 0.5, 0.5)] == [0.9, 0.7]        # same-class overlap removed
    assert [d.score for d in apply_thresholds(boxes, 0.5, 0.95)] == [0.9, 0.8, 0.7]  # looser NMS keeps it
    assert [d.score for d in apply_thresholds(boxes, 0.2, 0.5)] == [0.9, 0.7, 0.3]
    assert apply_thresholds(boxes, 0.95, 0.5) == []
    assert detection_at(boxes, 5, 5).box == (0, 0, 10, 10)          # smallest box under the click
    assert detection_at(boxes, 30, 30) is None


def test_face_detector_overlay_and_coco_record():
    detector = make_detector("mtcnn")
    found = apply_thresholds(detector.raw(data.astronaut()), 0.9, 0.5)
    assert len(found) == 1 and apply_thresholds(detector.raw(data.coffee()), 0.9, 0.5) == []
    overlay = draw(data.astronaut(), found)
    assert overlay.shape == (512, 512, 3) and not np.array_equal(overlay, data.astronaut())
    record = coco_records(Frame(0, "a.png", data.astronaut(), 0.0), found)[0]
    assert record["category_name"] == "face" and len(record["bbox"]) == 4 and len(record["keypoints"]) == 15
    with pytest.raises(ModelError):
        make_detector("mtcnn", weights="x.pth")


def test_random_torchvision_detector_runs_the_whole_pipeline():
    torch.manual_seed(0)
    detector = make_detector("ssdlite320_mobilenet_v3_large")
    assert not detector.trained                                   # no COCO weights offline: said so
    raw = detector.raw(data.astronaut())
    assert raw and all(0 <= d.score <= 1 and d.box[2] >= d.box[0] for d in raw)
    assert detector.internals() == {}                             # single-stage: no proposals
    strict, loose = apply_thresholds(raw, 0.02, 0.3), apply_thresholds(raw, 0.0, 0.9)
    assert len(strict) < len(loose)
    with pytest.raises(ModelError):
        make_detector("yolo9000")


def test_two_stage_detector_keeps_rpn_proposals_and_anchor_grid():
    torch.manual_seed(0)
    detector = make_detector("fasterrcnn_mobilenet_v3_large_320_fpn")
    detector.raw(FRAME)
    internals = detector.internals()
    proposals = internals["proposals"]
    assert proposals.shape == (100, 4)
    assert (proposals[:, 0] >= -1).all() and (proposals[:, 2] <= 321).all()     # frame pixels, not resized
    levels = anchors_at(internals, 200, 100)
    assert len(levels) == 3 and all(level.shape == (15, 4) for level in levels)
    for level in levels:
        centres = (level[:, :2] + level[:, 2:]) / 2
        stride_x = internals["anchor_levels"][0][1] * internals["scale"][1]
        assert np.abs(centres - [200, 100]).max() <= stride_x            # centred on the nearest grid cell
    picture = draw(FRAME, [], boxes=proposals)
    assert not np.array_equal(picture, FRAME)


def test_mask_and_keypoint_detectors_draw_masks_and_skeletons():
    torch.manual_seed(0)
    masks = make_detector("maskrcnn_resnet50_fpn").raw(FRAME)
    assert masks and all(d.mask is not None and d.mask.dtype == bool for d in masks)
    best = max(masks, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    x1, y1, x2, y2 = int(best.box[0]), int(best.box[1]), int(np.ceil(best.box[2])), int(np.ceil(best.box[3]))
    assert best.mask.shape == (min(y2, 240) - y1, min(x2, 320) - x1)    # covers the box, in frame pixels
    assert coco_records(Frame(0, "f.png", FRAME, 0.0), [best])[0]["mask_area"] == int(best.mask.sum())
    plain = Detection(best.box, best.score, best.label, best.category)
    filled = Detection(best.box, best.score, best.label, best.category, mask=np.ones_like(best.mask))
    assert not np.array_equal(draw(FRAME, [filled]), draw(FRAME, [plain]))   # the mask tints the box
    torch.manual_seed(0)
    people = make_detector("keypointrcnn_resnet50_fpn").raw(FRAME)
    assert people and len(people[0].points) == 17 and len(people[0].skeleton) == 19
    dots_only = Detection(people[0].box, people[0].score, "person", 1, people[0].points)
    assert not np.array_equal(draw(FRAME, [people[0]]), draw(FRAME, [dots_only]))


def test_custom_detector_weights_load_through_the_weights_reader(tmp_path):
    torch.manual_seed(1)
    source = make_detector("fasterrcnn_mobilenet_v3_large_320_fpn")
    import torchvision
    small = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None,
                                         weights_backbone=None, num_classes=3)
    torch.save({"model": small.state_dict()}, tmp_path / "three.pth")
    (tmp_path / "labels.txt").write_text("background\ncat\ndog\n")
    custom = make_detector("fasterrcnn_mobilenet_v3_large_320_fpn", weights=tmp_path / "three.pth")
    assert custom.trained and custom.categories == ["background", "cat", "dog"]
    assert all(d.label in ("cat", "dog") for d in custom.raw(FRAME))
    torch.save(source.model.state_dict(), tmp_path / "coco.pth")
    with pytest.raises(WeightsError, match="does not fit"):
        make_detector("ssdlite320_mobilenet_v3_large", weights=tmp_path / "coco.pth")
