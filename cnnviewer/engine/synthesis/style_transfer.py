"""A style-transfer run: the content and style images, the backbone, the image being optimised.

Same interface as the other synthesis runs (run / pictures / objective / step / history), so the
panel and `cnnviewer synthesize` drive it alike; here the objective is a loss and goes down.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from threading import Event

import numpy as np
import torch
from PIL import Image

from cnnviewer.engine.attribution.gradients import gradient_ready
from cnnviewer.engine.errors import Cancelled, ViewError
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.synthesis.pixels import total_variation
from cnnviewer.engine.synthesis.settings import StyleSettings
from cnnviewer.engine.synthesis.style import (
    Backbone,
    ModelBackbone,
    VggBackbone,
    content_loss,
    gram,
    present_vggs,
    style_loss,
)


def make_backbone(settings: StyleSettings, model: LoadedModel, *, untrained_vgg: bool = False) -> Backbone:
    """The network whose features define content and style.

    auto: the first VGG with weights on disk, else the current model. A named VGG needs its
    weights on disk (nothing is downloaded here), unless `untrained_vgg` (tests: random weights)."""
    from cnnviewer.engine.models.loading import load_model
    name = settings.backbone
    if name == "auto":
        present = present_vggs()
        name = present[0] if present else "model"
    if name == "model":
        return ModelBackbone(model)
    if not untrained_vgg and name not in present_vggs():
        from cnnviewer.engine.models.pretrained import default_weights, hub_cache_path
        raise ViewError(f"{name}'s ImageNet weights are not on this machine (expected {hub_cache_path(default_weights(name))}); "
                        "load that model once to download them, or use the current model's layers")
    vgg = load_model(name, device=str(model.device))
    return VggBackbone(vgg, settings.average_pooling)


def fit(pixels: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, h, w) in [0, 1], the longer side `size` (Lanczos: no aliasing)."""
    picture = Image.fromarray(np.ascontiguousarray(pixels[..., :3]))
    scale = size / max(picture.size)
    width, height = max(8, round(picture.width * scale)), max(8, round(picture.height * scale))
    resized = np.asarray(picture.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    return torch.from_numpy(resized.copy()).permute(2, 0, 1)[None].contiguous()


@dataclass(frozen=True)
class Losses:
    total: float
    content: float
    style: float
    tv: float


class StyleTransfer:
    """x = argmin α·L_content(x, p) + β·L_style(x, a) + γ·TV(x), x in [0, 1] (clamped where the network sees it)."""

    def __init__(self, backbone: Backbone, content: np.ndarray, style: np.ndarray, settings: StyleSettings) -> None:
        default_content, default_style = backbone.default_layers() if not (
            settings.content_layer and settings.style_layers) else ("", [])
        self.content_layer = settings.content_layer or default_content
        self.style_layers = [name.strip() for name in settings.style_layers.split(",") if name.strip()] or default_style
        # Everything resolved, so the recipe says exactly what ran.
        self.backbone, self.settings = backbone, replace(
            settings, backbone=backbone.name, content_layer=self.content_layer, style_layers=",".join(self.style_layers),
            style_weight=settings.style_weight or backbone.default_style_weight)
        settings = self.settings
        device = backbone.device
        self.content_image = fit(content, settings.size).to(device)
        style_image = fit(style, settings.size).to(device)
        with torch.no_grad():
            self.content_target = backbone.features(self.content_image, [self.content_layer])[0].detach()
            self.style_targets = [gram(f).detach() for f in backbone.features(style_image, self.style_layers)]
        self.generator = torch.Generator().manual_seed(settings.seed)
        if settings.init == "noise":
            start = torch.rand(self.content_image.shape, generator=self.generator).to(device)
        else:
            start = self.content_image.clone()
        self.image = start.requires_grad_(True)
        self.optimizer = self._optimizer()
        self.step = 0
        self.history: list[np.ndarray] = []
        self.parts: list[Losses] = []

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.settings.optimizer == "adam":
            return torch.optim.Adam([self.image], lr=self.settings.adam_lr)
        if self.settings.optimizer != "lbfgs":
            raise ViewError(f"unknown optimizer {self.settings.optimizer!r} (lbfgs or adam)")
        # No line search: one evaluation per step, as Johnson's neural-style runs it (strong Wolfe took
        # 4-5 evaluations per step here); a large TV weight can then overshoot, so it defaults to 0.
        return torch.optim.LBFGS([self.image], lr=self.settings.lbfgs_lr, max_iter=1, history_size=100)

    def retune(self, settings: StyleSettings) -> None:
        """Continue with new weights/steps (the layers and images stay); a new optimizer only if its
        kind or step changed."""
        old = self.settings
        self.settings = replace(settings, backbone=old.backbone, content_layer=old.content_layer,
                                style_layers=old.style_layers, size=old.size, init=old.init, seed=old.seed,
                                style_weight=settings.style_weight or old.style_weight)
        if (old.optimizer, old.adam_lr, old.lbfgs_lr) != (settings.optimizer, settings.adam_lr, settings.lbfgs_lr):
            self.optimizer = self._optimizer()

    def _losses(self) -> tuple[torch.Tensor, Losses]:
        settings, seen = self.settings, self.image.clamp(0.0, 1.0)
        layers = [self.content_layer] + self.style_layers
        features = self.backbone.features(seen, layers)
        content = content_loss(features[0], self.content_target)[0]
        style = style_loss([gram(f) for f in features[1:]], self.style_targets)[0]
        tv = total_variation(seen)[0] if settings.tv_weight else torch.zeros((), device=seen.device)
        total = settings.content_weight * content + settings.style_weight * style + settings.tv_weight * tv
        return total, Losses(*(float(v.detach()) for v in (total, content, style, tv)))

    def measure(self) -> Losses:
        """The losses of the image as it is now."""
        with torch.no_grad():
            return self._losses()[1]

    def run(self, steps: int, cancel: Event | None = None) -> None:
        with gradient_ready(self.backbone.module):
            for _ in range(steps):
                if self.step >= self.settings.steps:
                    return
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                measured: list[Losses] = []

                def closure() -> torch.Tensor:
                    self.optimizer.zero_grad()
                    total, parts = self._losses()
                    total.backward()
                    measured.append(parts)
                    return total

                self.optimizer.step(closure)
                if not np.isfinite(measured[-1].total):
                    raise ViewError("the loss became infinite or NaN: lower the style weight or the step")
                self.parts.append(measured[-1])
                self.history.append(np.array([measured[-1].total], np.float32))
                self.step += 1

    def objective(self) -> np.ndarray:
        return self.history[-1] if self.history else np.full(1, np.nan, np.float32)

    def pictures(self, best: bool = False) -> np.ndarray:
        with torch.no_grad():
            image = self.image.detach().clamp(0.0, 1.0).float().cpu()
        return (image * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def style_transfer(model: LoadedModel, content: np.ndarray, style: np.ndarray, settings: StyleSettings) -> StyleTransfer:
    return StyleTransfer(make_backbone(settings, model), content, style, settings)
