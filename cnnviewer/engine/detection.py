"""Detectors behind one interface, thresholds and NMS, overlays, and frame sources.

Detectors: the offline MTCNN face detector (real weights) and torchvision's
detection family (COCO weights from the torch hub cache when present, else
random initialisation, labelled untrained). Thresholds are applied after the
model, with torchvision's `batched_nms` per class, so moving a slider changes
the next frame's boxes without re-running anything but the filter.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw

from cnnviewer.engine.errors import ImageError, ModelError
from cnnviewer.engine.images import IMAGE_SUFFIXES, load_image

FACE_DETECTOR = "mtcnn"


@dataclass(frozen=True)
class Detection:
    """One box in image pixels."""

    box: tuple[float, float, float, float]        # x1, y1, x2, y2
    score: float
    label: str
    category: int = 1
    points: tuple[tuple[float, float], ...] = ()  # landmarks / keypoints (x, y)


def detector_names() -> list[str]:
    """The face detector first, then torchvision's detection models."""
    return [FACE_DETECTOR, *torchvision.models.list_models(module=torchvision.models.detection)]


class Detector(ABC):
    """A model that returns raw detections (before the user's thresholds)."""

    name: str = ""
    trained: bool = True

    @abstractmethod
    def raw(self, pixels: np.ndarray) -> list[Detection]:
        """Every detection the model makes in an (H, W, 3) uint8 frame."""


class FaceDetector(Detector):
    """MTCNN with its offline weights."""

    def __init__(self, device: str = "cpu") -> None:
        from cnnviewer.engine.mtcnn import MTCNN

        self.name, self._mtcnn = FACE_DETECTOR, MTCNN(device)
        self._mtcnn.thresholds = (0.6, 0.7, 0.5)   # the user's score slider does the final cut

    def raw(self, pixels: np.ndarray) -> list[Detection]:
        return [Detection(face.box, face.score, "face", 1, face.landmarks) for face in self._mtcnn.detect(pixels)]


class TorchvisionDetector(Detector):
    """A torchvision detection model; COCO weights only from the local hub cache."""

    def __init__(self, name: str, device: str = "cpu") -> None:
        from cnnviewer.engine.models import hub_cache_path
        from cnnviewer.engine.weights import forced_weights_only

        weights_enum = torchvision.models.get_model_weights(name).DEFAULT
        cached = hub_cache_path(weights_enum).is_file()
        with forced_weights_only():
            self.model = torchvision.models.get_model(
                name, weights=weights_enum if cached else None, weights_backbone=None,
                **({} if cached else {"num_classes": len(weights_enum.meta["categories"])}))
        self.model.eval().to(device)
        self.categories = list(weights_enum.meta["categories"])
        self.name, self.trained, self.device = name, cached, torch.device(device)

    @torch.inference_mode()
    def raw(self, pixels: np.ndarray) -> list[Detection]:
        tensor = torch.from_numpy(np.array(pixels)).to(self.device).permute(2, 0, 1).float() / 255.0
        output = self.model([tensor])[0]
        detections = []
        keypoints = output.get("keypoints")
        for i, (box, score, label) in enumerate(zip(output["boxes"].tolist(), output["scores"].tolist(),
                                                    output["labels"].tolist())):
            name = self.categories[label] if label < len(self.categories) else f"class {label}"
            points = tuple((float(x), float(y)) for x, y, _ in keypoints[i].tolist()) if keypoints is not None else ()
            detections.append(Detection(tuple(box), float(score), name, int(label), points))
        return detections


def make_detector(name: str = FACE_DETECTOR, device: str = "cpu") -> Detector:
    """Build a detector by name (see detector_names)."""
    if name == FACE_DETECTOR:
        return FaceDetector(device)
    if name not in detector_names():
        raise ModelError(f"unknown detector {name!r}; choose from {', '.join(detector_names())}")
    return TorchvisionDetector(name, device)


def apply_thresholds(detections: list[Detection], score: float, iou: float) -> list[Detection]:
    """Keep boxes above `score`, then per-class NMS at `iou` (torchvision's batched_nms)."""
    kept = [d for d in detections if d.score >= score]
    if not kept:
        return []
    boxes = torch.tensor([d.box for d in kept], dtype=torch.float32)
    scores = torch.tensor([d.score for d in kept], dtype=torch.float32)
    classes = torch.tensor([d.category for d in kept], dtype=torch.int64)
    order = torchvision.ops.batched_nms(boxes, scores, classes, iou).tolist()
    return [kept[i] for i in order]


def draw(pixels: np.ndarray, detections: list[Detection], colour=(255, 64, 64)) -> np.ndarray:
    """The frame with boxes, labels with scores, and landmark dots."""
    image = Image.fromarray(np.asarray(pixels))
    pen = ImageDraw.Draw(image)
    for d in detections:
        pen.rectangle(d.box, outline=colour, width=2)
        pen.text((d.box[0] + 3, d.box[1] + 2), f"{d.label} {d.score:.2f}", fill=colour)
        for x, y in d.points:
            pen.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(64, 255, 64))
    return np.asarray(image)


@dataclass(frozen=True, eq=False)
class Frame:
    """A frame with its source name and capture time (for latency, measured not guessed)."""

    index: int
    name: str
    pixels: np.ndarray
    captured: float


def frames(source: str | Path) -> Iterator[Frame]:
    """Frames from an image file or a folder of images (sorted by name).

    Raises:
        ImageError: nothing readable there.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImageError(f"{path.name}: no images in this folder")
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        files = [path]
    elif path.exists():
        raise ImageError(f"{path.name}: video files are played by the app's Live detection panel; "
                         "give the command an image or a folder of images")
    else:
        raise ImageError(f"{path.name}: no such file or folder")
    for index, file in enumerate(files):
        yield Frame(index, file.name, load_image(file).pixels, time.perf_counter())


def coco_records(frame: Frame, detections: list[Detection]) -> list[dict]:
    """COCO-style results: bbox as [x, y, width, height]."""
    return [{"image_id": frame.index, "file_name": frame.name, "category_id": d.category,
             "category_name": d.label, "score": round(d.score, 5),
             "bbox": [round(d.box[0], 2), round(d.box[1], 2), round(d.box[2] - d.box[0], 2),
                      round(d.box[3] - d.box[1], 2)],
             **({"keypoints": [round(v, 2) for point in d.points for v in (*point, 2)]} if d.points else {})}
            for d in detections]
