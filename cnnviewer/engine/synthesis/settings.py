"""Every synthesis method's hyper-parameters, torch-free: the Synthesis panel builds them on the
GUI thread, the engine runs them on the job thread, recipes store them as JSON."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class PixelSettings:
    """One run's hyper-parameters (the names of optimize_image.py's flags)."""

    steps: int = 1000
    lr_policy: str = "constant"        # or "progress": lr = min(max_lr, desired_progress / ‖g‖²)
    lr: float = 100.0
    max_lr: float = 100.0
    desired_progress: float = 2.0
    decay: float = 0.0
    blur_radius: float = 0.0
    blur_every: int = 0
    small_norm_percentile: float = 0.0
    small_benefit_percentile: float = 0.0
    jitter: int = 0
    tv_weight: float = 0.0             # total-variation smoothing (Nguyen et al. 2016): see pixels.py
    size: int = 224
    seed: int = 0


# Yosinski et al. 2015, Table 1, as doc/running-optimize-image.md of the Toolbox runs them; the
# third is the one most of the paper's images use.
PRESETS: dict[int, PixelSettings] = {
    1: PixelSettings(steps=500, lr_policy="progress", max_lr=100.0, desired_progress=2.0, blur_radius=0.5,
                     blur_every=4, small_norm_percentile=50.0),
    2: PixelSettings(steps=750, lr=100.0, decay=0.3, small_norm_percentile=20.0),
    3: PixelSettings(steps=1000, lr=100.0, decay=0.0001, blur_radius=1.0, blur_every=4),
    4: PixelSettings(steps=1000, lr_policy="progress", max_lr=1e8, desired_progress=2.0, blur_radius=0.5,
                     blur_every=4, small_benefit_percentile=90.0),
}
UNREGULARIZED = PixelSettings(steps=200, lr=100.0)


def preset(number: int, **changes) -> PixelSettings:
    return replace(PRESETS[number], **changes)


@dataclass(frozen=True)
class FourierSettings:
    steps: int = 512
    lr: float = 0.05
    size: int = 224
    spectrum_sd: float = 0.01
    decay_power: float = 1.0
    transforms: bool = True       # pad 12, jitter 8, scale ±5 %, rotate ±10°, jitter 4 (Lucid's standard set)
    seed: int = 0


@dataclass(frozen=True)
class DreamSettings:
    octaves: int = 4
    octave_scale: float = 1.4
    steps: int = 10               # per octave
    step_size: float = 1.5
    jitter: int = 32
    seed: int = 0
