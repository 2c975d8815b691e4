"""One detection's score as a model output, so every panel can explain that detection.

`DetectionScore` wraps a copy of the detector and returns, for an input image,
the score it gives the detection the user clicked: the same class's box that
overlaps it most (IoU ≥ 0.5) in a fresh, differentiable run. Its two outputs
are log(score) and log(1 − score), so softmax shows the score itself and the
gradient views take the gradient of log(score) — the score's gradient divided
by the score, the same map up to one constant.

The panels expect a square input; the frame is letterboxed into a square and
the wrapper crops it back out, so the detector sees exactly the live frame and
the padding gets no attribution.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from cnnviewer.engine.detection.detectors import Detector, FaceDetector
from cnnviewer.engine.detection.overlay import Detection
from cnnviewer.engine.media.images import InputImage, from_array
from cnnviewer.engine.models.handle import LoadedModel, Preprocess, wrap_module

MATCH_IOU = 0.5
PAD_GREY = 114


class DetectionScore(nn.Module):
    """(N, 3, S, S) images in [0, 1] → (N, 2): log score, log (1 − score) of one detection."""

    def __init__(self, detector: Detector, detection: Detection, frame_size: tuple[int, int],
                 offset: tuple[int, int]) -> None:
        super().__init__()
        self.height, self.width = frame_size
        self.top, self.left = offset
        self.box = torch.tensor([detection.box], dtype=torch.float32)
        self.category = detection.category
        # Copies: the live thread keeps running its own detector, and the gradient
        # views switch requires_grad on whatever model they are given.
        if isinstance(detector, FaceDetector):
            self.onet, self.detector = copy.deepcopy(detector.onet), None
        else:
            self.onet, self.detector = None, copy.deepcopy(detector.model)

    def forward(self, images: Tensor) -> Tensor:
        frames = images[:, :, self.top:self.top + self.height, self.left:self.left + self.width]
        scores = torch.stack([self._score(frame) for frame in frames])
        scores = scores.clamp(1e-6, 1 - 1e-6)
        return torch.stack([scores.log(), (-scores).log1p()], dim=1)

    def _score(self, frame: Tensor) -> Tensor:
        if self.onet is not None:
            return self._face_score(frame)
        output = self.detector([frame])[0]
        same = (output["labels"] == self.category).nonzero().flatten()
        if len(same):
            overlaps = torchvision.ops.box_iou(output["boxes"][same].detach(), self.box.to(frame.device))[:, 0]
            best = int(overlaps.argmax())
            if overlaps[best] >= MATCH_IOU:
                return output["scores"][same[best]]
        return frame.sum() * 0.0                       # no such detection here: score 0, still connected

    def _face_score(self, frame: Tensor) -> Tensor:
        """O-Net's face probability for the box, cropped square as MTCNN crops (differentiably)."""
        from cnnviewer.engine.detection.mtcnn import square_boxes
        x1, y1, x2, y2 = square_boxes(np.array([[*self.box[0].tolist(), 0.0]]))[0, :4].round()
        rois = torch.tensor([[0, x1, y1, x2 + 1, y2 + 1]], dtype=frame.dtype, device=frame.device)
        crop = torchvision.ops.roi_align(frame[None] * 255.0, rois, output_size=48, sampling_ratio=2, aligned=True)
        probs, _offsets, _marks = self.onet((crop - 127.5) * 0.0078125)
        return probs[0, 1]


def letterbox(pixels: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The frame centred in a grey square, and its (top, left) offset there."""
    height, width = pixels.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = np.full((side, side, 3), PAD_GREY, np.uint8)
    square[top:top + height, left:left + width] = pixels
    return square, (top, left)


def explain_detection(detector: Detector, detection: Detection, pixels: np.ndarray,
                      frame_name: str) -> tuple[LoadedModel, InputImage]:
    """A model whose class 0 is this detection's score, and the (letterboxed) frame to run it on."""
    square, offset = letterbox(np.asarray(pixels))
    module = DetectionScore(detector, detection, pixels.shape[:2], offset)
    side = square.shape[0]
    label = f"{detection.label} at ({detection.box[0]:.0f}, {detection.box[1]:.0f})"
    model = wrap_module(module.eval(), f"{detector.name} → {label}",
                        # the model's name already says which box: "…→ face at (241, 90): this detection"
                        categories=("this detection", "not this detection"),
                        weights_label=f"{detector.name} {'weights' if detector.trained else '(untrained)'}",
                        trained=detector.trained, device=str(detector.device),
                        preprocess=Preprocess(resize_size=side, crop_size=side, mean=(0.0, 0.0, 0.0),
                                              std=(1.0, 1.0, 1.0)))
    return model, from_array(square, frame_name)
