"""Detectors behind one interface, thresholds and NMS, overlays, and frame sources.

Detectors: the offline MTCNN face detector (real weights) and torchvision's
detection family (COCO weights from the torch hub cache when present, else
random initialisation, labelled untrained). Thresholds are applied after the
model, with torchvision's `batched_nms` per class, so moving a slider changes
the next frame's boxes without re-running anything but the filter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw

from cnnviewer.engine.errors import ModelError
from cnnviewer.engine.media.sources import Frame

FACE_DETECTOR = "mtcnn"


# COCO person keypoints: pairs of indices into torchvision's 17 keypoint names.
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
                 (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))
TOP_PROPOSALS = 100


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


def detector_names() -> list[str]:
    """The face detector first, then torchvision's detection models."""
    return [FACE_DETECTOR, *torchvision.models.list_models(module=torchvision.models.detection)]


class Detector(ABC):
    """A model that returns raw detections (before the user's thresholds and final NMS)."""

    name: str = ""
    trained: bool = True
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def raw(self, pixels: np.ndarray) -> list[Detection]:
        """Every detection the model makes in an (H, W, 3) uint8 frame."""

    def internals(self) -> dict:
        """What the last `raw` call saw inside the model (e.g. RPN proposals); {} if nothing."""
        return {}


class FaceDetector(Detector):
    """MTCNN with its offline weights; its final NMS is left to the user's IoU slider."""

    def __init__(self, device: str = "cpu") -> None:
        from cnnviewer.engine.detection.mtcnn import MTCNN

        self.name, self._mtcnn, self.device = FACE_DETECTOR, MTCNN(device), torch.device(device)
        self._mtcnn.thresholds = (0.6, 0.7, 0.5)   # the user's score slider does the final cut
        self._mtcnn.nms = (*self._mtcnn.nms[:2], 1.0)   # O-Net's boxes reach the slider before NMS

    def raw(self, pixels: np.ndarray) -> list[Detection]:
        return [Detection(face.box, face.score, "face", 1, face.landmarks) for face in self._mtcnn.detect(pixels)]


class TorchvisionDetector(Detector):
    """A torchvision detection model; COCO weights only from the local hub cache.

    The model's own final NMS is switched off (IoU 1.0) and its score floor
    lowered, so `raw` is what comes before NMS and the user's score and IoU
    sliders do the cutting. For two-stage
    models, the RPN's top proposals and its anchor grid are kept per frame.
    """

    def __init__(self, name: str, device: str = "cpu", weights: str | Path | None = None) -> None:
        from cnnviewer.engine.models.catalogue import hub_cache_path
        from cnnviewer.engine.models.weights import forced_weights_only

        weights_enum = torchvision.models.get_model_weights(name).DEFAULT
        self.categories = list(weights_enum.meta["categories"])
        if weights is not None:
            self.model, self.categories = _custom_detector(name, Path(weights), self.categories)
            cached = True
        else:
            cached = hub_cache_path(weights_enum).is_file()
            with forced_weights_only():
                self.model = torchvision.models.get_model(
                    name, weights=weights_enum if cached else None, weights_backbone=None,
                    **({} if cached else {"num_classes": len(self.categories)}))
        self.model.eval().to(device)
        self.name, self.trained, self.device = name, cached, torch.device(device)
        self.skeleton = COCO_SKELETON if "keypoint_names" in weights_enum.meta else ()
        heads = getattr(self.model, "roi_heads", self.model)
        if hasattr(heads, "nms_thresh"):
            heads.nms_thresh = 1.0
        if hasattr(heads, "score_thresh"):   # the slider cuts; even an untrained model shows its best guesses
            heads.score_thresh = min(heads.score_thresh, 0.001)
        self._internals: dict = {}
        self._seen: dict = {}
        rpn = getattr(self.model, "rpn", None)
        if rpn is not None:
            rpn.anchor_generator.register_forward_hook(self._record_anchor_grid)
            rpn.register_forward_hook(self._record_proposals)

    def _record_anchor_grid(self, module, args, _output) -> None:
        image_list, features = args
        padded = image_list.tensors.shape[-2:]
        self._seen["resized"] = tuple(image_list.image_sizes[0])
        self._seen["levels"] = [(int(padded[0] // f.shape[-2]), int(padded[1] // f.shape[-1]),
                                 base.detach().cpu().numpy()) for f, base in zip(features, module.cell_anchors)]

    def _record_proposals(self, _module, _args, output) -> None:
        self._seen["proposals"] = output[0][0][:TOP_PROPOSALS].detach().float().cpu().numpy()

    def internals(self) -> dict:
        return self._internals

    @torch.inference_mode()
    def raw(self, pixels: np.ndarray) -> list[Detection]:
        height, width = pixels.shape[:2]
        array = pixels if pixels.flags.writeable else pixels.copy()   # torch wants writable memory
        tensor = torch.from_numpy(array).to(self.device).permute(2, 0, 1).float().div_(255.0)
        self._seen = {}
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
            output = self.model([tensor])[0]
        if "proposals" in self._seen:      # resized-image pixels back to the frame's
            scale_y, scale_x = height / self._seen["resized"][0], width / self._seen["resized"][1]
            self._internals = {"proposals": self._seen["proposals"] * [scale_x, scale_y, scale_x, scale_y],
                               "anchor_levels": self._seen["levels"], "scale": (scale_y, scale_x)}
        boxes, scores, labels = output["boxes"].float().cpu(), output["scores"].float().cpu(), output["labels"].cpu()
        keypoints = output.get("keypoints")
        masks = output.get("masks")
        detections = []
        for i, (box, score, label) in enumerate(zip(boxes.tolist(), scores.tolist(), labels.tolist())):
            name = self.categories[label] if label < len(self.categories) else f"class {label}"
            points = tuple((float(x), float(y)) for x, y, _ in keypoints[i].tolist()) if keypoints is not None else ()
            mask = None
            if masks is not None:
                x1, y1, x2, y2 = _pixel_bounds(box, width, height)
                mask = (masks[i, 0, y1:y2, x1:x2] > 0.5).cpu().numpy()
            detections.append(Detection(tuple(box), float(score), name, int(label), points,
                                        self.skeleton if points else (), mask))
        return detections


def _custom_detector(name: str, path: Path, coco: list[str]) -> tuple[torch.nn.Module, list[str]]:
    """A torchvision detector filled from a user's weights file (weights-only, every key checked).

    The class count comes from the file's classification layer where the
    architecture has one (R-CNN's cls_score), else COCO's 91; names from a
    labels.txt beside the file, else COCO's when the count matches.
    """
    from cnnviewer.engine.errors import WeightsError
    from cnnviewer.engine.models.loading import labels_beside, prefix_variants
    from cnnviewer.engine.models.weights import fit_state_dict, read_weights

    loaded = read_weights(path)
    if loaded.kind != "state_dict":
        raise WeightsError(f"{path.name}: a detector's weights must be a state dict or checkpoint, "
                           f"not {loaded.kind}")
    failures = []
    for state_dict in prefix_variants(loaded.state_dict or {}):
        head = next((v for k, v in state_dict.items() if k.endswith("box_predictor.cls_score.weight")), None)
        num_classes = int(head.shape[0]) if head is not None else len(coco)
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes)
        try:
            fit_state_dict(model, state_dict, source=path.name, model_name=name)
        except WeightsError as error:
            failures.append(str(error))
            continue
        names = list(labels_beside(path) or (coco if num_classes == len(coco) else []))
        return model, names + [f"class {i}" for i in range(len(names), num_classes)]
    raise WeightsError(failures[0] if failures else f"{path.name}: no weights in the file")


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


def _pixel_bounds(box, width: int, height: int) -> tuple[int, int, int, int]:
    """A box's whole-pixel bounds, clipped to the frame (used for mask crops)."""
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    return x1, y1, max(x1, min(width, int(np.ceil(box[2])))), max(y1, min(height, int(np.ceil(box[3]))))


def make_detector(name: str = FACE_DETECTOR, device: str = "cpu", weights: str | Path | None = None) -> Detector:
    """Build a detector by name (see detector_names), optionally with custom weights.

    Raises:
        ModelError: unknown name, or custom weights for the built-in face detector.
        WeightsError: the weights file does not fit the architecture.
    """
    if name == FACE_DETECTOR:
        if weights is not None:
            raise ModelError("mtcnn uses its own offline weights; --weights is for torchvision detectors")
        return FaceDetector(device)
    if name not in detector_names():
        raise ModelError(f"unknown detector {name!r}; choose from {', '.join(detector_names())}")
    return TorchvisionDetector(name, device, weights)


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


PALETTE = ((255, 64, 64), (64, 160, 255), (255, 200, 40), (180, 90, 255), (40, 220, 160), (255, 120, 200),
           (140, 220, 40), (255, 150, 60))


def colour_of(category: int) -> tuple[int, int, int]:
    """A stable colour per class, so the same class keeps its colour from frame to frame."""
    return PALETTE[category % len(PALETTE)]


def draw(pixels: np.ndarray, detections: list[Detection], *, highlight: Detection | None = None,
         boxes: np.ndarray | None = None, box_colour=(255, 255, 255)) -> np.ndarray:
    """The frame with masks, boxes, labels with scores, keypoints and skeletons.

    `boxes` are extra outlines drawn thin underneath (RPN proposals, anchors);
    `highlight` is drawn thicker (the box being explained).
    """
    frame = np.asarray(pixels)
    if any(d.mask is not None for d in detections):
        frame = frame.copy()
        for d in detections:
            if d.mask is not None and d.mask.size:
                x1, y1, x2, y2 = _pixel_bounds(d.box, frame.shape[1], frame.shape[0])
                region = frame[y1:y2, x1:x2]
                tinted = (region * 0.5 + np.array(colour_of(d.category)) * 0.5).astype(np.uint8)
                region[d.mask[:y2 - y1, :x2 - x1]] = tinted[d.mask[:y2 - y1, :x2 - x1]]
    image = Image.fromarray(frame)
    pen = ImageDraw.Draw(image)
    for box in ([] if boxes is None else boxes):
        pen.rectangle(tuple(float(v) for v in box), outline=box_colour, width=1)
    for d in detections:
        colour = colour_of(d.category)
        pen.rectangle(d.box, outline=colour, width=4 if d is highlight else 2)
        pen.text((d.box[0] + 3, d.box[1] + 2), f"{d.label} {d.score:.2f}", fill=colour)
        for a, b in d.skeleton:
            if a < len(d.points) and b < len(d.points):
                pen.line((d.points[a], d.points[b]), fill=(64, 255, 64), width=2)
        for x, y in d.points:
            pen.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(64, 255, 64))
    return np.asarray(image)


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
