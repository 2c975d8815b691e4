"""Any classifier whose head is global average pooling + one linear layer, run fully convolutionally
(the lecture notes' "classes as local patterns"; Long et al. 2015, FCN).

Average pooling and the linear layer are both linear, so they commute: applying the linear layer
as a 1×1 convolution at every position of the last feature map and then averaging gives exactly the
classifier's logits. Skipping the average on a larger input gives a coarse map of which class each
region looks like, from the real weights, with no training. Heads that are not of that form (VGG's
fully connected layers over a fixed 7×7 grid, attention pooling) cannot be split this way, and
`fully_convolutional` says so.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from cnnviewer.engine.errors import ModelError
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.tracing import LeafTracer

MAX_SIDE = 640   # px: the longer side of the image the class map is computed on (memory and time)

_SHAPE_FUNCTIONS = (torch.flatten, F.dropout, torch.squeeze)
_SHAPE_METHODS = ("flatten", "view", "reshape", "squeeze")
_SHAPE_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)


@dataclass(frozen=True, eq=False)
class FullyConvolutional:
    """A classifier split at its global pooling: `features(x)` is the map the head pooled, and
    `weight` (K, C) / `bias` (K,) are the linear layer applied at every position."""

    features: fx.GraphModule
    weight: torch.Tensor
    bias: torch.Tensor | None
    pooled_at: str        # the node that pooled, for messages ("features.18 → adaptive_avg_pool2d → classifier.1")

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) class scores at every position of the last feature map."""
        feature_map = self.features(inputs)
        scores = torch.einsum("nchw,kc->nkhw", feature_map, self.weight)
        return scores if self.bias is None else scores + self.bias.view(1, -1, 1, 1)


@dataclass(frozen=True, eq=False)
class ClassMap:
    """Per-position class probabilities of one image, run fully convolutionally."""

    probabilities: np.ndarray   # (K, h, w) float32, softmax over classes at each position
    labels: np.ndarray          # (h, w) int64, the most probable class at each position
    input_size: tuple[int, int]  # (height, width) of the image the network saw

    def at_size(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels, confidence), each (height, width): the probabilities upsampled bilinearly (as FCN
        does with its coarse scores), then the most probable class and its probability per pixel.
        Only the classes that can win a block are upsampled (class_map_build.upsampled_argmax: exact):
        all 1000 ImageNet classes at a photo's size took gigabytes."""
        from cnnviewer.engine.segmentation.class_map_build import upsampled_argmax

        labels, confidence = upsampled_argmax(torch.from_numpy(self.probabilities), height, width)
        return labels.numpy(), confidence.numpy()

    def area(self) -> list[tuple[int, float]]:
        """(class, share of the positions) of every class present, largest first."""
        classes, counts = np.unique(self.labels, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return [(int(classes[i]), float(counts[i] / self.labels.size)) for i in order]


def _is_global_average_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        module = modules.get(str(node.target))
        return isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1))
    if node.op == "call_function" and getattr(node.target, "__name__", "") == "adaptive_avg_pool2d":
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return size in (1, (1, 1), [1, 1])
    if node.op in ("call_method", "call_function") and getattr(node.target, "__name__", node.target) == "mean":
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return dims is not None and {int(d) % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims])} \
            == {2, 3}
    return False


def _passes_shape_only(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _SHAPE_MODULES)
    if node.op == "call_function":
        return node.target in _SHAPE_FUNCTIONS
    return node.op == "call_method" and node.target in _SHAPE_METHODS


def fully_convolutional(model: LoadedModel) -> FullyConvolutional:
    """Split `model` at its global average pooling, if its head is pooling + one linear layer.

    The head is found on a trace through every layer; the split is then made on a trace that keeps
    every module outside the head whole (MobileNetV2's `features`, ResNet's `layer4`), so the
    features part calls the classifier's own blocks under their own names: each block still runs,
    and its output can be recorded, knocked out or explained like the classifier's.

    Raises:
        ModelError: the model does not qualify (one line, saying why).
    """
    from cnnviewer.engine.runtime.tracing import trace

    module = model.module
    from cnnviewer.engine.segmentation.models import is_segmentation_name
    if is_segmentation_name(model.name) or type(module).__name__ == "ClassMapNet":
        raise ModelError(f"{model.name} already gives a class map: there is no classifier head to spread out")
    if isinstance(module, torch.jit.ScriptModule):
        raise ModelError(f"{model.name} is TorchScript: its head cannot be taken apart")
    try:
        with eval_mode(module):
            traced = trace(module)
    except Exception as error:  # noqa: BLE001 - any tracing failure means: cannot be split
        raise ModelError(f"{model.name} cannot be traced, so its head cannot be found ({type(error).__name__})") \
            from None
    found = _find_head(traced)
    if found is None:
        raise ModelError(f"{model.name}'s head is not global average pooling followed by one linear layer, "
                         "so it cannot be run at every position (VGG's and AlexNet's heads read a fixed grid)")
    head = {str(found[0].target), str(found[1].target)} - {str(found[0].name)}
    try:
        with eval_mode(module):
            coarse = _BlockTracer(head).trace(module)
        blocks = fx.GraphModule(module, coarse, type(module).__name__)
        coarse_found = _find_head(blocks)
    except Exception:  # noqa: BLE001 - a model that only traces layer by layer keeps the fine split
        coarse_found = None
    if coarse_found is not None:
        traced, found = blocks, coarse_found
    pool, linear_node, chain = found
    linear = dict(traced.named_modules())[str(linear_node.target)]
    feature_node = pool.args[0]
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for original in traced.graph.nodes:
        env[original] = graph.node_copy(original, lambda n: env[n])
        if original is feature_node:
            break
    graph.output(env[feature_node])
    features = fx.GraphModule(traced, graph, f"{type(module).__name__}Features")
    features.graph.eliminate_dead_code()
    features.recompile()
    return FullyConvolutional(features, linear.weight.detach(),
                              None if linear.bias is None else linear.bias.detach(),
                              " → ".join([getattr(feature_node, "name", "features"), *chain]))


class _BlockTracer(LeafTracer):
    """Traces into the modules that hold the head (`open_paths` and their parents) and keeps every
    other module whole, so the split calls the classifier's blocks themselves."""

    def __init__(self, open_paths: set[str]) -> None:
        super().__init__()
        self._open = open_paths

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        name = module_qualified_name
        if name and not any(path == name or path.startswith(name + ".") for path in self._open):
            return True
        return super().is_leaf_module(m, name)


def _find_head(traced: fx.GraphModule) -> tuple[fx.Node, fx.Node, list[str]] | None:
    """(the global pooling node, the linear layer's node, the chain between) of a graph whose output
    is that linear layer, else None."""
    modules = dict(traced.named_modules())
    output = next(node for node in traced.graph.nodes if node.op == "output")
    for node in traced.graph.nodes:
        if not _is_global_average_pool(node, modules):
            continue
        chain, current = [node.name], node
        while len(current.users) == 1:
            current = next(iter(current.users))
            chain.append(str(current.target) if current.op == "call_module" else current.name)
            if current.op == "call_module" and isinstance(modules.get(str(current.target)), nn.Linear):
                break
            if not _passes_shape_only(current, modules):
                current = None
                break
        if current is None or current.op != "call_module" or not isinstance(modules.get(str(current.target)),
                                                                             nn.Linear):
            continue
        if list(current.users) != [output] or output.args[0] is not current:
            continue    # something follows the linear layer (a second layer, a sigmoid): not this simple head
        return node, current, chain
    return None


def ClassMapNet(split: FullyConvolutional) -> fx.GraphModule:  # noqa: N802 - it builds the network
    """The split classifier as one module whose output is the class map (N, K, h, w), so every
    gradient view can explain a class over a region of it (Target.region). Its layers are the
    user's own, under the classifier's names (`features.3`, `layer4.1`): nothing is copied, and
    nothing is changed; the linear layer's weights are buffers applied at every position."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    result = None
    for original in split.features.graph.nodes:
        if original.op == "output":
            result = env[original.args[0]]
            break
        env[original] = graph.node_copy(original, lambda n: env[n])
    holder = nn.Module()
    for name, child in split.features.named_children():
        holder.add_module(name, child)
    for name, value in split.features.named_buffers(recurse=False):
        holder.register_buffer(name, value, persistent=False)
    for name, value in split.features.named_parameters(recurse=False):
        holder.register_parameter(name, value)
    holder.register_buffer("class_weight", split.weight, persistent=False)
    scores = graph.call_function(torch.einsum, ("nchw,kc->nkhw", result, graph.get_attr("class_weight")))
    if split.bias is not None:
        holder.register_buffer("class_bias", split.bias, persistent=False)
        bias = graph.call_method("view", (graph.get_attr("class_bias"), 1, -1, 1, 1))
        scores = graph.call_function(operator.add, (scores, bias))
    graph.output(scores)
    return fx.GraphModule(holder, graph, "ClassMapNet")


def prepared_whole(image: InputImage, model: LoadedModel, max_side: int = MAX_SIDE) -> torch.Tensor:
    """The whole image (no centre crop), its longer side at most `max_side`, normalised as the model
    expects: (1, 3, H, W)."""
    import torchvision.transforms.functional as TF

    from cnnviewer.engine.runtime.inference import input_statistics
    pixels = torch.from_numpy(np.array(image.pixels)).permute(2, 0, 1)
    height, width = pixels.shape[1:]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        pixels = TF.resize(pixels, size, antialias=True,
                           interpolation=TF.InterpolationMode(model.preprocess.interpolation))
    tensor = pixels.to(torch.float32).div_(255.0)
    if model.input_channels == 1:
        tensor = TF.rgb_to_grayscale(tensor)
    tensor = TF.normalize(tensor, *input_statistics(model.preprocess.mean, model.preprocess.std,
                                                     model.input_channels))
    return tensor.unsqueeze(0).to(device=model.device, dtype=model.dtype)


def class_map(model: LoadedModel, image: InputImage, split: FullyConvolutional | None = None,
              max_side: int = MAX_SIDE) -> ClassMap:
    """The class at every position of `image`'s last feature map (see the module docstring)."""
    split = split or fully_convolutional(model)
    inputs = prepared_whole(image, model, max_side)
    with torch.inference_mode(), eval_mode(model.module):
        scores = split.logits(inputs)[0].float()
    probabilities = torch.softmax(scores, dim=0)
    return ClassMap(probabilities.cpu().numpy(), probabilities.argmax(dim=0).cpu().numpy(),
                    tuple(inputs.shape[-2:]))


WINDOW_SIDE = 448   # px: the square the window's fully convolutional model sees (2x the usual crop)


def fully_convolutional_model(model: LoadedModel, side: int = WINDOW_SIDE) -> LoadedModel:
    """`model` as a LoadedModel whose output is its class map (ClassMapNet), on a `side`-px centre
    square, so every panel (feature maps, gradients of a region, receptive fields) works on it.

    Raises:
        ModelError: the model does not qualify (see `fully_convolutional`).
    """
    from dataclasses import replace

    net = ClassMapNet(fully_convolutional(model)).eval()
    return LoadedModel(name=f"{model.name} (fully convolutional)", module=net, categories=model.categories,
                       preprocess=replace(model.preprocess, resize_size=side, crop_size=side),
                       weights_label=model.weights_label, trained=model.trained, device=model.device,
                       dtype=model.dtype, weights_path=model.weights_path)
