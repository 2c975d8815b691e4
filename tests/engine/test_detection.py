"""Detectors, thresholds/NMS, overlays (masks, skeletons, proposals) and anchors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from skimage import data

from cnnviewer.engine.detection.detectors import make_detector
from cnnviewer.engine.detection.overlay import (
    Detection,
    anchors_at,
    apply_thresholds,
    batched_nms,
    coco_records,
    detection_at,
    draw,
)
from cnnviewer.engine.errors import ModelError, WeightsError
from cnnviewer.engine.media.sources import Frame
from cnnviewer.engine.runtime.hooks import has_hooks

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


def test_numpy_nms_matches_torchvision_batched_nms():
    """The GUI thread's NMS is numpy; torchvision's batched_nms is the reference."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        count = int(rng.integers(1, 300))
        corners = rng.uniform(0, 400, (count, 2))
        sizes = rng.uniform(2, 120, (count, 2))
        boxes = np.concatenate([corners, corners + sizes], axis=1)
        scores = rng.permutation(count) / count + 0.001          # distinct: the order is defined
        classes = rng.integers(0, 4, count)
        iou = float(rng.choice([0.0, 0.3, 0.5, 0.7, 1.0]))
        expected = torchvision.ops.batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(classes),
                                               iou).tolist()
        assert batched_nms(boxes, scores, classes, iou) == expected, (trial, iou)


def test_two_stage_detector_keeps_rpn_proposals_and_anchor_grid():
    torch.manual_seed(0)
    detector = make_detector("fasterrcnn_mobilenet_v3_large_320_fpn")
    assert not has_hooks(detector.model)                          # hooks only while a pass runs
    detector.raw(FRAME)
    assert not has_hooks(detector.model)
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


def test_explaining_a_face_leaves_the_live_detector_as_it_was():
    """The explanation works on its own copy of O-Net: the live detector keeps running unchanged."""
    from cnnviewer.engine.attribution.target import Target
    from cnnviewer.engine.detection.explain import explain_detection
    from cnnviewer.engine.workbench import Workbench

    detector = make_detector("mtcnn")
    flags = [p.requires_grad for p in detector.onet.parameters()]
    weights = [p.detach().clone() for p in detector.onet.parameters()]
    face = max(apply_thresholds(detector.raw(FRAME), 0.9, 0.5), key=lambda d: d.score)
    model, image = explain_detection(detector, face, FRAME, "frame.png")
    workbench = Workbench()
    summary = workbench.forward(model, image)
    assert summary.predictions[0].index == 0 and summary.predictions[0].probability > 0.9   # "this detection"
    result = workbench.gradient(model, image, "saliency", Target(class_index=0))
    assert np.abs(result.attribution).sum() > 0
    assert [p.requires_grad for p in detector.onet.parameters()] == flags
    assert all(torch.equal(a, b) for a, b in zip(weights, detector.onet.parameters()))
    assert not has_hooks(detector.onet) and not detector.onet.training


def test_each_detector_starts_at_its_own_score_threshold():
    from cnnviewer.engine.detection.overlay import default_score

    assert default_score("mtcnn") == 0.9                # above the 0.67-0.81 false faces of a photo sequence
    assert default_score("fasterrcnn_resnet50_fpn") == 0.5


def test_box_labels_sit_on_a_filled_tab_in_the_box_colour():
    from cnnviewer.engine.detection.overlay import Detection, colour_of

    frame = np.zeros((480, 640, 3), np.uint8)
    found = Detection((100.0, 120.0, 300.0, 360.0), 0.93, "person", 1)
    picture = draw(frame, [found])
    tab = picture[105:119, 100:160].reshape(-1, 3)                  # above the box's top edge
    colour = np.array(colour_of(1))
    assert (np.abs(tab.astype(int) - colour).sum(axis=1) == 0).mean() > 0.6   # mostly the filled tab
    assert len({tuple(p) for p in tab}) > 2                         # with text on it
    at_top = draw(frame, [Detection((100.0, 0.0, 300.0, 200.0), 0.93, "person", 1)])
    assert (np.abs(at_top[2:14, 101:150].astype(int) - colour).sum(axis=2) == 0).mean() > 0.3   # inside


def test_before_after_nms_halves_are_titled_and_their_labels_enlarged():
    """Trial row 26: each half says what it shows; labels are drawn twice as big (the halves are shown halved)."""
    from cnnviewer.engine.detection.overlay import Detection as Box
    from cnnviewer.engine.detection.scene import GAP, compose
    pixels = np.full((240, 320, 3), 128, np.uint8)
    raw = [Box((180.0, 100.0, 300.0, 200.0), 0.9, "face"), Box((182.0, 102.0, 302.0, 198.0), 0.8, "face")]
    both = compose(pixels, raw, score=0.5, iou=0.5, view=1).picture
    plain = compose(pixels, [], score=0.5, iou=0.5, view=1).picture
    assert both.shape == (240, 2 * 320 + GAP, 3)
    corner = both[:10, :40]
    assert (corner < 40).mean() > 0.3 and (both[:10, 320 + GAP:320 + GAP + 40] < 40).mean() > 0.3   # title tabs
    assert not np.array_equal(plain[:20, :60], np.full((20, 60, 3), 128, np.uint8))
    single = compose(pixels, raw, score=0.5, iou=0.5, view=0).picture

    def tab_rows(picture: np.ndarray) -> int:   # the label tab above the box, below the title tab
        return int((np.abs(picture[40:100, 186].astype(int) - 128).sum(axis=1) > 0).sum())
    assert tab_rows(both) > 1.5 * tab_rows(single) > 0
