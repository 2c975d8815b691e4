"""SmoothGrad (Smilkov et al. 2017): the mean of a base attribution over noisy copies of the input.

A single gradient is noisy because the score's gradient fluctuates sharply at small scales;
averaging it over x + N(0, σ²) keeps what is stable. σ is a fraction of the input's range
(x.max() − x.min()), so the same setting means the same for any normalisation.

The noise is drawn from a private generator seeded by `seed` (recomputing gives the same map,
and the global RNG is untouched), in one draw of shape (B·N, C, H, W) as Captum's NoiseTunnel
draws it (`torch.normal(0, σ)` with the same seed gives the same numbers only when drawn in one
call: torch's Box-Muller works in blocks of 16 values, so per-batch draws differ). That costs N
copies of the input in memory (25 × 224² × 3 floats = 15 MB); the base attributions then run
`batch` noisy copies per backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import Event

import torch
from torch import Tensor, nn

from cnnviewer.engine.attribution.gradients import (
    guided_backprop,
    input_x_gradient,
    integrated_gradients,
    saliency,
)
from cnnviewer.engine.attribution.target import SMOOTHABLE, Target
from cnnviewer.engine.errors import Cancelled

_BATCHED = {"saliency": saliency, "guided-backprop": guided_backprop, "input-x-gradient": input_x_gradient}


def noise_for(inputs: Tensor, noise: float, samples: int, seed: int) -> Tensor:
    """(B·N, C, H, W) Gaussian noise with σ = `noise` × the input's range, drawn as Captum's NoiseTunnel
    draws it after `torch.manual_seed(seed)` (sample i of image b is row b·N + i)."""
    sigma = noise * float(inputs.max() - inputs.min())
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    shape = (inputs.shape[0] * samples, *inputs.shape[1:])
    drawn = torch.randn(shape, generator=generator, dtype=torch.float32) * torch.tensor(sigma, dtype=torch.float32)
    return drawn.to(device=inputs.device, dtype=inputs.dtype)


def smoothgrad(model: nn.Module, inputs: Tensor, target: Target, base: str = "saliency", noise: float = 0.15,
               samples: int = 25, seed: int = 0, batch: int = 16, steps: int = 50, baseline: Tensor | None = None,
               cancel: Event | None = None, progress: Callable[[float], None] | None = None) -> Tensor:
    """Mean of `base`'s attribution over `samples` noisy copies of each input: (B, C, H, W).

    Args:
        base: one of SMOOTHABLE; integrated gradients uses `steps` and `baseline` (fixed, not noised).
        noise: σ as a fraction of the input's range (x.max() − x.min()), e.g. 0.15.
        samples: noisy copies N; seed: the noise generator's seed.
        batch: noisy copies per backward pass (for integrated gradients: path points per pass).
    """
    if base not in SMOOTHABLE:
        raise ValueError(f"SmoothGrad cannot smooth {base!r}; choose {', '.join(SMOOTHABLE)}")
    if samples < 1:
        raise ValueError("SmoothGrad needs at least one sample")
    drawn = noise_for(inputs, noise, samples, seed)
    total = torch.zeros_like(inputs)
    count = inputs.shape[0]
    for item in range(count):
        image = inputs[item:item + 1]
        rows = drawn[item * samples:(item + 1) * samples]
        step = 1 if base == "integrated-gradients" else max(1, batch)
        for start in range(0, samples, step):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            noisy = image + rows[start:start + step]
            if base == "integrated-gradients":
                part = integrated_gradients(model, noisy, target, baseline=baseline, steps=steps, batch=batch,
                                            cancel=cancel)
            else:
                part = _BATCHED[base](model, noisy, target)
            total[item] += part.sum(dim=0)
            if progress is not None:
                progress((item * samples + min(start + step, samples)) / (count * samples))
    return total / samples
