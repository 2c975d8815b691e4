"""Neural style transfer (Gatys, Ecker & Bethge 2016), the lecture notes' content and Gram losses.

x minimises α·L_content + β·L_style (+ an optional total-variation term):
- L_content = ½ Σ (F(x) − F(p))² at one layer (the notes' Σ_c ‖f_c(x) − f_c(p)‖²_F, halved as the paper);
- L_style = Σ_l w_l E_l with E_l = Σ (Ĝ_x − Ĝ_a)² / (4 N_l²), w_l = 1/L, where Ĝ = F Fᵀ / M_l is the
  Gram matrix over the layer's M_l positions. With images of one size this is the paper's
  1/(4 N² M²) Σ (G − A)² exactly; dividing each Gram by its own M lets the style image have another size.

Features come from a torchvision VGG when its weights are on disk (content relu4_2, style relu1_1 …
relu5_1, max pooling replaced by average pooling as the paper does, without touching any module),
or from the current model with any layers (by default one per resolution level of the first three,
see `ModelBackbone.default_layers`).
The forward stops after the deepest layer needed. L-BFGS runs one function evaluation per step
(max_iter=1, its memory kept between steps), so Stop and Continue work as for every other method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnviewer.engine.errors import ViewError
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.synthesis.settings import (
    PAPER_CONTENT_LAYER,
    PAPER_STYLE_LAYERS,
    VGG_BACKBONES,
)

STYLE_WEIGHT = 1.5e6   # β on the model's own layers (Backbone.default_style_weight: measured there)
STYLE_LEVELS = 3       # the model's own style layers: the first activation at each of this many resolutions
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.ELU, nn.Mish, nn.PReLU)


def gram(features: Tensor) -> Tensor:
    """(B, C, H, W) → (B, C, C): F Fᵀ / M, M = H·W."""
    flat = features.flatten(2).float()
    return flat @ flat.transpose(1, 2) / flat.shape[-1]


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    return 0.5 * (features.float() - target.float()).pow(2).flatten(1).sum(dim=1)


def style_loss(grams: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """Σ_l (1/L) Σ (Ĝ − Â)² / (4 N_l²), one value per batch item."""
    total = 0.0
    for value, target in zip(grams, targets):
        total = total + (value - target).pow(2).flatten(1).sum(dim=1) / (4.0 * value.shape[-1] ** 2)
    return total / len(grams)


def vgg_layer_names(features: nn.Sequential) -> dict[str, int]:
    """The paper's names (conv4_2, relu4_2, pool4) → index in a torchvision VGG's `features`."""
    names, block, conv = {}, 1, 0
    for position, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = position
        elif isinstance(module, nn.ReLU):
            names[f"relu{block}_{conv}"] = position
        elif isinstance(module, nn.MaxPool2d):
            names[f"pool{block}"] = position
            block, conv = block + 1, 0
    return names


def present_vggs() -> list[str]:
    """The VGGs whose ImageNet weights are on this machine (hub cache): no network."""
    from cnnviewer.engine.models.pretrained import find_pretrained
    return [name for name in VGG_BACKBONES if find_pretrained(name) is not None]


class Backbone(ABC):
    """Feature maps at named layers for images in [0, 1]; the forward stops after the deepest."""

    name = "model"
    # The style weight β that balances the content loss at the default layers: the Gram terms grow
    # as activations⁴ and the content term as activations², so it depends on the network's scale.
    # MobileNetV2's own layers (trial row 4; 300 L-BFGS steps at 256 px, total variation 0.02,
    # EfficientNet-Lite0 as judge, three content/style pairs): with five style levels no β did both
    # (1e6: astronaut/brick's style loss fell 5.2x; 3e6: it lost its class, and coffee/gravel the espresso).
    # With three (see `default_layers`), STYLE_WEIGHT keeps each content's class in Lite0's top 5 with
    # the style loss down 10.6-70x; 1e6 left astronaut/brick at 8.5x, 3e6 lost the espresso again.
    # Thin margins (benchmarks/bench_style.py): the helmet is Lite0's 2nd, and 1.75e6 lost it, 2e6 not.
    default_style_weight = STYLE_WEIGHT

    def __init__(self, module: nn.Module, mean, std, device: torch.device, dtype: torch.dtype, label: str) -> None:
        self.module, self.device, self.dtype, self.label = module, device, dtype, label
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).reshape(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).reshape(1, 3, 1, 1)

    def normalise(self, images: Tensor) -> Tensor:
        return ((images - self.mean) / self.std).to(self.dtype)

    @abstractmethod
    def features(self, images: Tensor, layers: Sequence[str]) -> list[Tensor]:
        """Each layer's feature map for `images`, in the order asked."""

    @abstractmethod
    def default_layers(self) -> tuple[str, list[str]]:
        """(content layer, style layers) when the user names none."""


class VggBackbone(Backbone):
    """A torchvision VGG's `features`, walked module by module (pooling averaged if asked)."""

    def __init__(self, model: LoadedModel, average_pooling: bool) -> None:
        super().__init__(model.module, model.preprocess.mean, model.preprocess.std, model.device, model.dtype,
                         f"{model.name} ({model.weights_label})")
        self.names = vgg_layer_names(model.module.features)
        self.average_pooling = average_pooling
        self.name, self.default_style_weight = model.name, 1e3

    def default_layers(self) -> tuple[str, list[str]]:
        return PAPER_CONTENT_LAYER, list(PAPER_STYLE_LAYERS)

    def features(self, images: Tensor, layers: Sequence[str]) -> list[Tensor]:
        unknown = [name for name in layers if name not in self.names]
        if unknown:
            raise ViewError(f"VGG has no layer {unknown[0]!r} (use names such as relu4_2)")
        wanted = {self.names[name] for name in layers}
        found: dict[int, Tensor] = {}
        x = self.normalise(images)
        modules = list(self.module.features)
        for position, module in enumerate(modules[:max(wanted) + 1]):
            if self.average_pooling and isinstance(module, nn.MaxPool2d):
                x = F.avg_pool2d(x, module.kernel_size, module.stride, module.padding, module.ceil_mode)
            else:
                x = module(x)
            if position in wanted:     # a conv's output would be overwritten by an in-place ReLU after it
                following = modules[position + 1] if position + 1 < len(modules) else None
                found[position] = x.clone() if getattr(following, "inplace", False) else x
        return [found[self.names[name]] for name in layers]


class _Enough(Exception):
    """Raised by the last hook needed: the rest of the network is not."""


class ModelBackbone(Backbone):
    """The current model: a layer's output at its first call, the forward stopped once all are seen."""

    def __init__(self, model: LoadedModel) -> None:
        super().__init__(model.module, model.preprocess.mean, model.preprocess.std, model.device, model.dtype,
                         f"{model.name} (the current model)")
        self.size = model.preprocess.crop_size

    def _run(self, images: Tensor, names: list[str], stop: bool) -> list[tuple[str, Tensor]]:
        """(name, 4-D output at its first call) in the order the modules finish."""
        modules = dict(self.module.named_modules())
        missing = [name for name in names if name not in modules]
        if missing:
            raise ViewError(f"the model has no layer {missing[0]!r}")
        seen: dict[str, Tensor] = {}

        def hook_for(name: str):
            def hook(_module, _inputs, output):
                value = first_tensor(output)
                if name not in seen and value is not None and value.dim() == 4:
                    seen[name] = value
                    if stop and len(seen) == len(names):
                        raise _Enough()
            return hook

        handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
        try:
            self.module(self.normalise(images))
        except _Enough:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return list(seen.items())

    def features(self, images: Tensor, layers: Sequence[str]) -> list[Tensor]:
        seen = dict(self._run(images, list(dict.fromkeys(layers)), stop=True))
        absent = [name for name in layers if name not in seen]
        if absent:
            raise ViewError(f"{absent[0]} gives no feature map (style transfer needs a layer with channels × H × W)")
        return [seen[name] for name in layers]

    def default_layers(self) -> tuple[str, list[str]]:
        """VGG's choice, shallower: the first activation at each of the first STYLE_LEVELS resolutions
        for style (VGG takes five, relu1_1 … relu5_1), the second activation at the fourth (relu4_2)
        for content. A classifier's deepest Gram matrices carry its classes more than a texture: matched
        to the style image they fought the content (MobileNetV2's 8×8 level fell 2x where the first fell
        20x) and no style weight kept the content's class while the style loss fell 10x; without them
        the picture keeps its class and takes the style's colours and strokes. A model without
        activation modules (functional ReLUs) uses its leaf modules instead."""
        modules = list(self.module.named_modules())
        candidates = [name for name, module in modules if isinstance(module, ACTIVATIONS)] or [
            name for name, module in modules if name and not list(module.children())]
        probe = torch.zeros((1, 3, self.size, self.size), device=self.device)
        with torch.no_grad():
            order = self._run(probe, candidates, stop=False)
        levels: dict[tuple[int, ...], list[str]] = {}
        for name, value in order:
            levels.setdefault(tuple(value.shape[-2:]), []).append(name)
        groups = list(levels.values())[:5]
        if not groups:
            raise ViewError("the model has no layer with feature maps")
        fourth = groups[min(3, len(groups) - 1)]
        return (fourth[1] if len(fourth) > 1 else fourth[0]), [group[0] for group in groups[:STYLE_LEVELS]]
