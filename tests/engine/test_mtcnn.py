"""MTCNN with its real offline weights finds the faces in skimage's astronaut, and only them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cnnviewer.engine.detection.mtcnn import MTCNN

ASTRONAUT_FACE = (179, 60, 266, 173)   # x1, y1, x2, y2, looked at by eye in the 512x512 photo


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN()


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_one_face_with_landmarks_inside(detector):
    faces = detector.detect(data.astronaut())
    assert len(faces) == 1 and faces[0].score > 0.95
    assert iou(faces[0].box, ASTRONAUT_FACE) > 0.8
    x1, y1, x2, y2 = faces[0].box
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in faces[0].landmarks)
    (left_eye, right_eye, nose, mouth_left, mouth_right) = faces[0].landmarks
    assert left_eye[0] < right_eye[0] and left_eye[1] < nose[1] < mouth_left[1]


@pytest.mark.parametrize(("shift", "scale"), [((40, -30), 1.0), ((0, 0), 0.6), ((-60, 20), 1.3)])
def test_the_face_moves_and_scales_with_the_photo(detector, shift, scale):
    photo = Image.fromarray(data.astronaut())
    size = int(512 * scale)
    moved = Image.new("RGB", (640, 640), (90, 90, 90))
    moved.paste(photo.resize((size, size), Image.Resampling.BILINEAR), (64 + shift[0], 64 + shift[1]))
    faces = detector.detect(np.asarray(moved))
    expected = tuple(v * scale + (64 + shift[i % 2]) for i, v in enumerate(ASTRONAUT_FACE))
    assert len(faces) == 1 and iou(faces[0].box, expected) > 0.7


def test_a_pasted_second_face_is_found_and_a_mug_has_none(detector):
    photo = data.astronaut()
    face = Image.fromarray(photo[40:190, 160:290]).resize((104, 120))
    both = Image.fromarray(photo.copy())
    both.paste(face, (360, 300))
    faces = detector.detect(np.asarray(both))
    assert len(faces) == 2
    assert {iou(f.box, ASTRONAUT_FACE) > 0.7 for f in faces} == {True, False}
    second = next(f for f in faces if iou(f.box, ASTRONAUT_FACE) <= 0.7)
    assert 340 <= second.box[0] <= 400 and 280 <= second.box[1] <= 340
    assert detector.detect(data.coffee()) == []
