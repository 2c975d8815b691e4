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
# Multi-faceted ascent's own regularizers (Nguyen, Yosinski & Clune 2016): total variation and jitter,
# from each facet's mean image. On MobileNetV2 (two facets of features.17 channel 5, 100 steps) they
# reach the activation preset 3 does (1.25 and 1.62 against 1.75 and 1.50).
FACETS = PixelSettings(steps=200, lr=100.0, tv_weight=3e-4, jitter=8)


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


# Gatys et al. 2016: content at relu4_2, style at the first ReLU of each of VGG's five blocks.
PAPER_CONTENT_LAYER = "relu4_2"
PAPER_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_BACKBONES = ("vgg19", "vgg16", "vgg13", "vgg11", "vgg19_bn", "vgg16_bn", "vgg13_bn", "vgg11_bn")
STYLE_BACKBONES = ("auto",) + VGG_BACKBONES + ("model",)   # auto: the first VGG whose weights are present, else model


@dataclass(frozen=True)
class StyleSettings:
    """Neural style transfer (Gatys et al. 2016): minimise α·L_content + β·L_style (+ TV) over the image.

    Layers are VGG names (relu4_2) for a VGG backbone, module names (features.8) for the model's
    own; empty means the paper's (VGG) or one per resolution level of the model (see style.py)."""

    steps: int = 300
    optimizer: str = "lbfgs"           # or "adam"
    content_weight: float = 1.0        # α
    style_weight: float = 0.0          # β; 0: the backbone's (VGG: 1e3, α/β = 1e-3 as most of the paper's
                                       # figures; the model's own layers: 1.5e6, their activations are smaller)
    tv_weight: float = 0.02            # total variation (squared neighbour differences): smooths the
                                       # checkerboard the model's strided layers leave (0 left it all over
                                       # the CLI's results); next to VGG's far larger losses it is negligible
    lbfgs_lr: float = 1.0
    adam_lr: float = 0.02              # per step, the image in [0, 1]
    size: int = 256                    # the content image's longer side, pixels (the style image's too)
    init: str = "content"              # or "noise" (the paper's white noise)
    backbone: str = "auto"
    content_layer: str = ""
    style_layers: str = ""             # comma-separated
    average_pooling: bool = True       # VGG only: the paper's average instead of max pooling
    seed: int = 0
