"""Detectors behind one interface: raw detections, before the user's thresholds and final NMS.

The offline MTCNN face detector (real weights) and torchvision's detection
family (COCO weights from the torch hub cache when present, else random
initialisation, labelled untrained). Thresholds, NMS and drawing live in the
torch-free overlay module, so moving a slider re-runs only the filter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch
import torchvision

from cnnviewer.engine.detection.overlay import COCO_SKELETON, Detection, pixel_bounds
from cnnviewer.engine.errors import ModelError

FACE_DETECTOR = "mtcnn"


TOP_PROPOSALS = 100


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

    def run(self, pixels: np.ndarray) -> tuple[list[Detection], object | None]:
        """What the live pipeline shows of a frame: the raw detections, and a class map for a
        segmenter (engine.segmentation.live), None for a detector."""
        return self.raw(pixels), None


class FaceDetector(Detector):
    """MTCNN with its offline weights; its final NMS is left to the user's IoU slider."""

    def __init__(self, device: str = "cpu") -> None:
        from cnnviewer.engine.detection.mtcnn import MTCNN

        self.name, self._mtcnn, self.device = FACE_DETECTOR, MTCNN(device), torch.device(device)
        self._mtcnn.thresholds = (0.6, 0.7, 0.5)   # the user's score slider does the final cut
        self._mtcnn.nms = (*self._mtcnn.nms[:2], 1.0)   # O-Net's boxes reach the slider before NMS

    @property
    def onet(self) -> torch.nn.Module:
        """MTCNN's last stage, which gives each face box its final score."""
        return self._mtcnn.onet

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
        from cnnviewer.engine.models.pretrained import hub_cache_path
        from cnnviewer.engine.models.weight_files import forced_weights_only

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

    @contextmanager
    def _recording_rpn(self) -> Iterator[None]:
        """Keep the RPN's anchor grid and top proposals of the pass run inside (two-stage models only).

        The hooks exist only for that pass, so a copy of the model (an
        explanation's) or any other use of it never carries them.
        """
        self._seen = {}
        rpn = getattr(self.model, "rpn", None)
        with ExitStack() as stack:
            if rpn is not None:
                stack.enter_context(rpn.anchor_generator.register_forward_hook(self._record_anchor_grid))
                stack.enter_context(rpn.register_forward_hook(self._record_proposals))
            yield

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
        with self._recording_rpn(), torch.autocast(self.device.type, dtype=torch.float16,
                                                    enabled=self.device.type == "cuda"):
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
                x1, y1, x2, y2 = pixel_bounds(box, width, height)
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
    from cnnviewer.engine.errors import UntrustedPickleError, WeightsError
    from cnnviewer.engine.models.fitting import fit_state_dict
    from cnnviewer.engine.models.loading import labels_beside, prefix_variants
    from cnnviewer.engine.models.weight_files import read_weights

    try:
        loaded = read_weights(path)
    except UntrustedPickleError:   # detectors take state dicts only: there is nothing to trust here
        raise WeightsError(f"{path.name} is a full pickled model; a detector needs a state dict or a checkpoint "
                           "holding one (torch.save(model.state_dict(), ...))") from None
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


def weights_on_disk(name: str) -> bool:
    """Whether `name` would run with real weights here (MTCNN ships its own; torchvision's detectors
    need their COCO file in the torch hub cache), without building the model."""
    if name == FACE_DETECTOR:
        return True
    from cnnviewer.engine.models.pretrained import hub_cache_path
    return hub_cache_path(torchvision.models.get_model_weights(name).DEFAULT).is_file()


def make_detector(name: str = FACE_DETECTOR, device: str = "cpu", weights: str | Path | None = None) -> Detector:
    """Build a detector by name (see detector_names), optionally with custom weights (the Live
    panel's segmenters: engine.segmentation.live.make_live_model).

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


