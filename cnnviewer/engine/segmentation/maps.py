"""The class map of any model whose output is one, (1, K, h, w): a segmentation network (FCN,
DeepLabV3, LR-ASPP once loaded), a fully convolutional model (`fully_convolutional_model`), a user's
own net. It runs on the model's own input, the centre crop its preprocessing makes, as every panel
shows it; `extent` says where that crop lies in the image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cnnviewer.engine.errors import ModelError
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.segmentation.fully_convolutional import ClassMap
from cnnviewer.engine.segmentation.overlay import crop_extent


@dataclass(frozen=True, eq=False)
class CropClassMap(ClassMap):
    """A ClassMap of the model's crop: `display` the crop's (S, S, 3) pixels, `extent` (y0, x0, y1, x1)
    the crop as fractions of the image (overlay.crop_extent; beyond 0..1 where it is padded)."""

    display: np.ndarray | None = None
    extent: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


def is_class_map(output: torch.Tensor) -> bool:
    """Whether a batched output is a class map (N, K, h, w) rather than scores (N, K)."""
    return output.dim() == 4


def model_class_map(model: LoadedModel, image: InputImage) -> CropClassMap:
    """Per-position class probabilities (softmax over the K channels) of `model` on `image`'s crop.

    Raises:
        ModelError: the model's output is not (1, K, h, w) (a classifier: say --fully-convolutional).
    """
    prepared = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels)
    with torch.inference_mode(), eval_mode(model.module):
        output = first_tensor(model.module(prepared.tensor))
    if not is_class_map(output):
        raise ModelError(f"{model.name}'s output is {tuple(output.shape[1:])}, one score per class, not a class "
                         "map (K, h, w)")
    probabilities = torch.softmax(output[0].float(), dim=0)
    height, width = image.pixels.shape[:2]
    return CropClassMap(probabilities.cpu().numpy(), probabilities.argmax(dim=0).cpu().numpy(),
                        tuple(prepared.tensor.shape[-2:]), prepared.display,
                        crop_extent(height, width, model.preprocess.resize_size, model.preprocess.crop_size))
