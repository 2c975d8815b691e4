"""Gradient ascent in pixel space with the natural-image regularizers of Yosinski et al. 2015.

argmax_x f(x) − Ω(x), as the Deep Visualization Toolbox's optimize_image.py does it: the image x
lives in mean-subtracted 0..255 pixel units (Caffe's data space), is clipped to valid pixels before
every forward pass, and after each step, with g = ∂f/∂u the gradient with respect to the network's
own (normalised) input u, as Caffe's ∂f/∂data is (so the paper's learning rates and strengths carry over),
    x += lr · g;   x *= (1 − decay)                           (L2 decay)
    every `blur_every` steps: Gaussian blur of radius `blur_radius` per channel
    pixels whose norm (over colour) is below the `small_norm_percentile`-th percentile → 0
    pixels whose |contribution| |Σ_c x·g| is below the `small_benefit_percentile`-th → 0
plus optional jitter (the image rolled by up to `jitter` px for the pass, the gradient rolled back)
and optional total-variation smoothing, the regularizer Nguyen et al. 2016 pair with jitter: the
step's direction is g − tv_weight · ∂TV/∂x, with TV(x) the sum over colours of the squared
differences of vertically and horizontally neighbouring pixels (pixel units; squared, not absolute,
so its gradient is smooth: 2 × the discrete Laplacian's negative). The step then is x += lr · that;
the "progress" policy scales by its norm. Stable for lr · tv_weight < 1/16 (the operator's largest
eigenvalue is 16): with lr 100, tv_weight up to about 6e-4.
Several images (facets, seeds) run together as one batch; percentiles are taken per image.
"""

from __future__ import annotations

from threading import Event

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from cnnviewer.engine.attribution.gradients import gradient_ready
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.synthesis.objective import fast_layout, score, synthesis_view
from cnnviewer.engine.synthesis.settings import PixelSettings


def gaussian_blur(images: Tensor, radius: float) -> Tensor:
    """Per-channel Gaussian blur with sigma `radius` (scipy's gaussian_filter truncates at 4 sigma)."""
    half = max(1, int(4.0 * radius + 0.5))
    return TF.gaussian_blur(images, [2 * half + 1, 2 * half + 1], [radius, radius])


def total_variation(x: Tensor) -> Tensor:
    """TV(x) per image: the sum of squared differences of neighbouring pixels (rows and columns)."""
    rows, columns = x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]
    return rows.pow(2).flatten(1).sum(dim=1) + columns.pow(2).flatten(1).sum(dim=1)


def total_variation_gradient(x: Tensor) -> Tensor:
    """∂TV/∂x, in closed form (no autograd graph for a regularizer applied outside the network)."""
    rows, columns = x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]
    grad = torch.zeros_like(x)
    grad[..., 1:, :] += 2.0 * rows
    grad[..., :-1, :] -= 2.0 * rows
    grad[..., :, 1:] += 2.0 * columns
    grad[..., :, :-1] -= 2.0 * columns
    return grad


def _below_percentile(values: Tensor, percentile: float) -> Tensor:
    """(B, H, W) mask of the entries under each image's `percentile`-th percentile."""
    flat = values.flatten(1)
    cut = torch.quantile(flat, percentile / 100.0, dim=1, keepdim=True)
    return (flat < cut).reshape(values.shape)


class PixelAscent:
    """A batch of images being ascended; `run` some steps, read `pictures()`, change `settings`
    and run on (Continue), or make a new one (Restart)."""

    def __init__(self, model: LoadedModel, target: Target, settings: PixelSettings, *, batch: int = 1,
                 start: Tensor | None = None, threads: int | None = None) -> None:
        self.model, self.target, self.settings = model, target, settings
        self.generator = torch.Generator().manual_seed(settings.seed)
        mean = torch.tensor(model.preprocess.mean, dtype=torch.float32).reshape(1, 3, 1, 1) * 255.0
        std = torch.tensor(model.preprocess.std, dtype=torch.float32).reshape(1, 3, 1, 1) * 255.0
        self.mean, self.std = mean, std
        size = settings.size
        if start is None:   # optimize_image.py's 'mean_plus_rand': the mean image plus N(0, 10) noise
            start = torch.randn((batch, 3, size, size), generator=self.generator) * 10.0
        self.x = start.detach().to(torch.float32).clone()
        self.step = 0
        self.history: list[np.ndarray] = []       # the objective of each image, per step
        self.best = self.x.clone()
        self.best_value = torch.full((self.x.shape[0],), -float("inf"))
        self._pending: Tensor | None = None
        self._network: tuple | None = None      # synthesis_view(model), made on the first run
        self.threads = threads          # torch threads its runs want (None: the caller's)

    def _model_input(self, x: Tensor) -> Tensor:
        """Mean-subtracted 0..255 pixels -> the model's normalised input: x / (255 · std)."""
        return (x / self.std).to(self.model.device, dtype=self.model.dtype)

    def _gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shift = self.settings.jitter
        dy = dx = 0
        if shift:
            dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=self.generator))
        moved = torch.roll(x, (dy, dx), (2, 3)).requires_grad_(True)
        network, layer = self._network
        values = score(network, fast_layout(self._model_input(moved)), self.target, layer)
        (grad,) = torch.autograd.grad(values.sum(), moved)
        # ∂f/∂(the network's input), applied in pixel units: what Caffe's ∂f/∂data is, since Caffe nets
        # read mean-subtracted pixels directly; so the paper's learning rates mean the same here.
        grad = grad.float().cpu() * self.std
        return values.detach().float().cpu(), torch.roll(grad, (-dy, -dx), (2, 3))

    def run(self, steps: int, cancel: Event | None = None) -> None:
        """`steps` more steps (fewer if the settings' total is reached); Stop takes effect within a step."""
        with gradient_ready(self.model.module):
            if self._network is None:
                self._network = synthesis_view(self.model.module, self.target.layer, self.model_input())
            for _ in range(steps):
                if self.step >= self.settings.steps:
                    return
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                self._one_step()

    def _one_step(self) -> None:
        if self._pending is not None:   # the update held back at the end of an earlier run (Continue)
            self._update(self._pending)
            self._pending = None
        self.x = torch.maximum(torch.minimum(self.x, 255.0 - self.mean), -self.mean)   # valid pixels
        values, grad = self._gradient(self.x)
        self.history.append(values.numpy())
        better = values > self.best_value
        self.best[better], self.best_value = self.x[better], torch.maximum(values, self.best_value)
        self.step += 1
        if self.step >= self.settings.steps:
            # As optimize_image.py: no update after the last evaluation, so the image shown is the one
            # the last objective was measured on; kept, so that Continue makes the same image as one run.
            self._pending = grad
            return
        self._update(grad)

    def _update(self, grad: Tensor) -> None:
        s = self.settings
        direction = grad - s.tv_weight * total_variation_gradient(self.x) if s.tv_weight else grad
        if s.lr_policy == "progress":
            # optimize_image.py: the lr that would raise f by desired_progress were f linear. The step is
            # lr·g in pixels with g = ∂f/∂u = S·∂f/∂x (u = x / S, the model's input), so the predicted
            # rise is lr·Σ g·∂f/∂x = lr·Σ g²/S (dividing by Σ g² alone fell short by S ≈ 58: no progress).
            rise = (direction * grad / self.std).flatten(1).sum(dim=1).clamp_min(1e-20)
            lr = torch.clamp(s.desired_progress / rise, max=s.max_lr).reshape(-1, 1, 1, 1)
        else:
            lr = s.lr
        x = self.x + lr * direction
        x = x * (1.0 - s.decay)
        if s.blur_every and s.blur_radius > 0 and (self.step - 1) % s.blur_every == 0:
            x = gaussian_blur(x, s.blur_radius)
        if s.small_norm_percentile > 0:
            x = x * ~_below_percentile(x.norm(dim=1), s.small_norm_percentile).unsqueeze(1)
        if s.small_benefit_percentile > 0:
            benefit = (grad * -x).sum(dim=1).abs()
            x = x * ~_below_percentile(benefit, s.small_benefit_percentile).unsqueeze(1)
        self.x = x

    def objective(self) -> np.ndarray:
        """The latest objective of each image."""
        return self.history[-1] if self.history else np.full(self.x.shape[0], np.nan, np.float32)

    def pictures(self, best: bool = False) -> np.ndarray:
        """(B, H, W, 3) uint8: the images as they are now (or the best each reached)."""
        x = self.best if best and self.history else self.x
        pixels = torch.clamp(x + self.mean, 0.0, 255.0)
        return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def model_input(self) -> Tensor:
        """The current images as the model's input (for checks by another model's preprocessing)."""
        return self._model_input(torch.maximum(torch.minimum(self.x, 255.0 - self.mean), -self.mean))
