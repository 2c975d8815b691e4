"""Preprocess images, run forward passes, and keep their activations.

One forward pass with every module recorded gives the predictions, the layer
list with shapes, and all feature maps; `ActivationCache` keeps the latest
passes per (model, image) so that switching layers or channels costs no
further forward pass.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from cnnviewer.engine.errors import CnnViewerError, ModelError, first_line
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.handle import LoadedModel, Preprocess
from cnnviewer.engine.runtime.graph_capture import Activations
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.runtime.recording import capture_activations, prepare_capture
from cnnviewer.engine.types import LayerId, LayerInfo, Prediction


@dataclass(frozen=True, eq=False)
class PreparedInput:
    """The model's input and the picture it corresponds to pixel for pixel."""

    tensor: Tensor          # (1, 3, S, S) on the model's device and dtype
    display: np.ndarray     # (S, S, 3) uint8: resized and cropped, unnormalised


@dataclass(frozen=True, eq=False)
class ForwardPass:
    """Everything one recorded forward pass produced (tensors on the CPU, float32)."""

    model_token: int
    image: InputImage
    display: np.ndarray
    probabilities: np.ndarray          # (num_outputs,) float32
    activations: Activations             # name -> output without batch dimension, float32, CPU
    layers: tuple[LayerInfo, ...]
    forward_ms: float


def prepare_input(image: InputImage, preprocess: Preprocess, device: torch.device,
                  dtype: torch.dtype = torch.float32, channels: int = 3) -> PreparedInput:
    """Resize the short side, centre-crop and normalise, as torchvision's weights expect.

    For a model whose first convolution reads one channel, the picture is
    turned to luma first and normalised with the mean of the per-channel values.
    """
    pixels = torch.from_numpy(np.array(image.pixels)).permute(2, 0, 1)  # (3, H, W) uint8
    pixels = TF.resize(pixels, [preprocess.resize_size], antialias=True,
                       interpolation=TF.InterpolationMode(preprocess.interpolation))
    pixels = TF.center_crop(pixels, [preprocess.crop_size, preprocess.crop_size])
    display = np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())
    tensor = pixels.to(torch.float32).div_(255.0)
    if channels == 1:
        tensor = TF.rgb_to_grayscale(tensor)
    tensor = TF.normalize(tensor, *input_statistics(preprocess.mean, preprocess.std, channels))
    return PreparedInput(tensor=tensor.unsqueeze(0).to(device=device, dtype=dtype), display=display)


def input_statistics(mean, std, channels: int) -> tuple[list[float], list[float]]:
    """The normalisation of a `channels`-channel input: a one-channel model reads luma, normalised
    with the mean of the per-channel values."""
    if channels == 1 and len(mean) == 3:
        return [sum(mean) / 3], [sum(std) / 3]
    return list(mean)[:channels], list(std)[:channels]


def _prepare(model: LoadedModel, image: InputImage) -> PreparedInput:
    return prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels)


def _run(model: LoadedModel, call):
    """Run `call()`; a model that fails on its input becomes a one-line ModelError."""
    try:
        return call()
    except CnnViewerError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise ModelError(f"{model.title} cannot run on this input: {first_line(error)}") from None


def check_runs(model: LoadedModel) -> None:
    """Run one forward pass on a blank input, so a model that cannot run is refused at load.

    Raises:
        ModelError: the model fails on a (1, C, S, S) input of its crop size.
    """
    size = model.preprocess.crop_size
    blank = torch.zeros(1, model.input_channels, size, size, device=model.device, dtype=model.dtype)
    with torch.inference_mode():
        _run(model, lambda: model.module(blank))


def _softmax(output: Tensor) -> np.ndarray:
    logits = first_tensor(output)
    if logits is None:
        return np.zeros(0, dtype=np.float32)
    if logits.dim() == 4:   # a class map (N, K, h, w): each class's probability averaged over the map,
        # so the top-5 is what covers the image (segmentation models, fully convolutional classifiers)
        return torch.softmax(logits.detach()[0].float(), dim=0).mean(dim=(1, 2)).cpu().numpy()
    logits = logits.detach().float().reshape(logits.shape[0], -1)[0]
    return torch.softmax(logits, dim=0).cpu().numpy()


def top_k(model: LoadedModel, probabilities: np.ndarray, k: int = 5) -> list[Prediction]:
    """The k most probable classes, best first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [Prediction(model.label(int(i)), int(i), float(probabilities[i])) for i in order]


def layer_infos(model: LoadedModel, activations: Activations) -> tuple[LayerInfo, ...]:
    """Every named module with its type and recorded output shape, in model order."""
    infos = []
    for name, module in model.module.named_modules():
        shape = activations.shape(name) if name in activations else None
        infos.append(LayerInfo(name, type(module).__name__, shape,
                               0 if name == "" else name.count(".") + 1))
    return tuple(infos)


def _unbatched(tensor: Tensor) -> Tensor:
    """A recorded output as panels read it: without the batch dimension, float32, on the CPU."""
    return (tensor[0] if tensor.dim() > 0 else tensor).float().cpu()


def run_forward(model: LoadedModel, image: InputImage) -> ForwardPass:
    """One forward pass of `image` recording every module's output."""
    prepared = _prepare(model, image)
    _run(model, lambda: prepare_capture(model.module, prepared.tensor))   # tracing is not the pass
    start = time.perf_counter()
    output, recorded = _run(model, lambda: capture_activations(model.module, prepared.tensor))
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    forward_ms = (time.perf_counter() - start) * 1000.0
    activations = recorded.with_transform(_unbatched)
    return ForwardPass(
        model_token=model.token, image=image, display=prepared.display,
        probabilities=_softmax(output), activations=activations,
        layers=layer_infos(model, activations), forward_ms=forward_ms,
    )


def predict(model: LoadedModel, image: InputImage, k: int = 5) -> list[Prediction]:
    """Top-k classes from a plain forward pass (no recording)."""
    prepared = _prepare(model, image)
    with torch.inference_mode():
        output = _run(model, lambda: model.module(prepared.tensor))
    return top_k(model, _softmax(output), k)


class ActivationCache:
    """The last few recorded passes, keyed by (model token, image identity).

    Used from the job thread only. A small LRU: the current pass plus the one
    before, so toggling between two images does not recompute. Passes of a
    model that was replaced are dropped as soon as the new model runs.
    """

    def __init__(self, capacity: int = 2) -> None:
        self._capacity = capacity
        self._passes: OrderedDict[tuple[int, int], ForwardPass] = OrderedDict()

    def get(self, model: LoadedModel, image: InputImage) -> ForwardPass:
        """Return the recorded pass for this model and image, running it if needed."""
        key = (model.token, id(image))
        found = self._passes.get(key)
        if found is not None and found.image is image:
            self._passes.move_to_end(key)
            return found
        for other in [k for k in self._passes if k[0] != model.token]:   # a replaced model's passes
            del self._passes[other]
        result = run_forward(model, image)
        self._passes[key] = result
        while len(self._passes) > self._capacity:
            self._passes.popitem(last=False)
        return result

    def shape_of(self, model: LoadedModel, layer: LayerId) -> tuple[int, ...] | None:
        """A layer's output shape from any cached pass of this model (shapes do not depend on the image)."""
        for (token, _), recorded in reversed(self._passes.items()):
            if token == model.token and layer in recorded.activations:
                return recorded.activations.shape(layer)
        return None

    def clear(self) -> None:
        """Forget every pass (e.g. when a model is replaced)."""
        self._passes.clear()
