"""DeepDream (Mordvintsev et al. 2015): from a given image, amplify a layer's activations.

As the original notebook does it: the image in mean-subtracted 0..255 pixels is shrunk into
`octaves` levels by `octave_scale`; from the smallest up, the detail dreamed so far is enlarged
onto the next level and `steps` ascent steps run there, each on the image rolled by a random
jitter of up to ±`jitter` px, with a step of `step_size` / mean |gradient|, clipped to valid pixels.
The objective is the layer's mean squared activation (or one channel's mean).
"""

from __future__ import annotations

from threading import Event

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cnnviewer.engine.attribution.gradients import gradient_ready
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.synthesis.objective import score
from cnnviewer.engine.synthesis.settings import DreamSettings


class DeepDream:
    """One image dreamed octave by octave; `run(n)` does n more steps (the same interface as the ascents)."""

    def __init__(self, model: LoadedModel, target: Target, settings: DreamSettings, image: np.ndarray) -> None:
        self.model, self.target, self.settings = model, target, settings
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.mean = torch.tensor(model.preprocess.mean, dtype=torch.float32).reshape(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(model.preprocess.std, dtype=torch.float32).reshape(1, 3, 1, 1) * 255.0
        base = torch.from_numpy(np.array(image[..., :3], dtype=np.uint8)).permute(2, 0, 1)[None].float() - self.mean
        self.levels = [base]
        for _ in range(settings.octaves - 1):
            height, width = self.levels[-1].shape[-2:]
            self.levels.append(F.interpolate(self.levels[-1], size=(max(8, round(height / settings.octave_scale)),
                                                                    max(8, round(width / settings.octave_scale))),
                                             mode="bilinear", align_corners=False))
        self.levels.reverse()                     # smallest first
        self.octave = 0
        self.in_octave = 0
        self.x = self.levels[0].clone()
        self.step = 0
        self.history: list[np.ndarray] = []

    @property
    def total_steps(self) -> int:
        return self.settings.octaves * self.settings.steps

    def _next_octave(self) -> None:
        detail = self.x - self.levels[self.octave]
        self.octave += 1
        self.in_octave = 0
        base = self.levels[self.octave]
        self.x = base + F.interpolate(detail, size=base.shape[-2:], mode="bilinear", align_corners=False)

    def run(self, steps: int, cancel: Event | None = None) -> None:
        with gradient_ready(self.model.module):
            for _ in range(steps):
                if self.step >= self.total_steps:
                    return
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                if self.in_octave == self.settings.steps:
                    self._next_octave()
                self._one_step()

    def _one_step(self) -> None:
        shift = self.settings.jitter
        dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=self.generator))
        moved = torch.roll(self.x, (dy, dx), (2, 3)).requires_grad_(True)
        values = score(self.model.module, (moved / self.std).to(self.model.device, dtype=self.model.dtype), self.target)
        (grad,) = torch.autograd.grad(values.sum(), moved)
        grad = torch.roll(grad.float().cpu(), (-dy, -dx), (2, 3))
        self.x = self.x + self.settings.step_size / grad.abs().mean().clamp_min(1e-12) * grad
        self.x = torch.maximum(torch.minimum(self.x, 255.0 - self.mean), -self.mean)
        self.history.append(values.detach().float().cpu().numpy())
        self.step += 1
        self.in_octave += 1

    def objective(self) -> np.ndarray:
        return self.history[-1] if self.history else np.full(1, np.nan, np.float32)

    def pictures(self, best: bool = False) -> np.ndarray:
        pixels = torch.clamp(self.x + self.mean, 0.0, 255.0)
        return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def activation_energy(model: LoadedModel, pixels: np.ndarray, layer: str) -> float:
    """‖a‖² / n of `layer` on an (H, W, 3) uint8 image (as DeepDream measures it), for checks."""
    dream = DeepDream(model, Target(layer=layer), DreamSettings(octaves=1), pixels)
    with gradient_ready(model.module), torch.no_grad():
        inputs: Tensor = (dream.x / dream.std).to(model.device, dtype=model.dtype)
        return float(score(model.module, inputs, Target(layer=layer))[0])
