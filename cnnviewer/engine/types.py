"""Names shared by engine and UI, importable without torch."""

from __future__ import annotations

from dataclasses import dataclass

LayerId = str  # dotted named_modules() name, e.g. 'layer1.0.conv2'; '' is the whole model

DEFAULT_MODEL = "mobilenet_v2"   # real ImageNet weights ship offline for it
# Files the weights loader reads, by suffix (its content decides the format).
# Panels `cnnviewer export` renders.
EXPORT_PANELS = ("predictions", "feature-maps", "filters", "model-summary", "receptive-field", "architecture")
# Panels that draw the model alone, so `export` needs no image for them.
MODEL_ONLY_PANELS = ("architecture", "model-summary")
# An ONNX file opens wherever a weights file does (and as --model): it is a whole model, converted.
ONNX_SUFFIX = ".onnx"
WEIGHT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".pt2", ".tar", ONNX_SUFFIX})


@dataclass(frozen=True)
class Prediction:
    """One class of the top-k."""

    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class LayerInfo:
    """A module as the layer tree shows it."""

    name: LayerId          # dotted named_modules() name; '' is the whole model
    type_name: str         # e.g. 'Conv2d'
    output_shape: tuple[int, ...] | None   # without the batch dimension
    depth: int             # number of dots + 1; the root is 0


def default_layer(layers: tuple[LayerInfo, ...]) -> LayerId | None:
    """A telling first layer: the output of the first block with spatial maps."""
    spatial = [info for info in layers if info.output_shape and len(info.output_shape) == 3]
    top_level = [info for info in spatial if info.depth == 2] or spatial
    return top_level[min(2, len(top_level) - 1)].name if top_level else None
