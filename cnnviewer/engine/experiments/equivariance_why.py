"""Why a layer is (or is not) equivariant or invariant to a transform: the probe's hover text.

Read from the layer's type, stride, pooling and padding and from its receptive field (jump, start),
so a student sees the cause next to the measured curve, not only the number.
"""

from __future__ import annotations

from torch import nn

_POINTWISE = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
              nn.LeakyReLU, nn.ELU, nn.BatchNorm2d, nn.Identity, nn.Dropout, nn.Mish)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _last_leaf(module: nn.Module) -> nn.Module:
    """The module whose kind describes a block: its last layer."""
    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    return leaves[-1] if leaves else module


def _strided(module: nn.Module) -> list[str]:
    """'stride 2' notes for the sliding windows inside a block."""
    notes = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and max(_pair(m.stride)) > 1:
            notes.append(f"{type(m).__name__} stride {_pair(m.stride)[1]}")
    return notes


def _kind(module: nn.Module, jump: float | None) -> str:
    """What the layer itself does to a moving input."""
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and _pair(module.output_size) == (1, 1):
        return "global pooling: invariant by construction (only content entering at the border changes it)"
    if isinstance(module, nn.MaxPool2d):
        k, s = _pair(module.kernel_size)[1], _pair(module.stride)[1]
        return (f"max pooling {k}×{k}, stride {s}: a feature that moves inside one window gives the same maximum, "
                f"so the map is locally invariant; moves across windows are subsampled")
    if isinstance(module, nn.AvgPool2d):
        k, s = _pair(module.kernel_size)[1], _pair(module.stride)[1]
        return f"average pooling {k}×{k}, stride {s}: blurs before subsampling, which softens aliasing (Zhang 2019)"
    if isinstance(module, nn.Conv2d):
        s = _pair(module.stride)[1]
        groups = " depthwise" if module.groups > 1 and module.groups == module.in_channels else ""
        if s > 1:
            return (f"{groups.strip() + ' ' if groups else ''}convolution, stride {s}: shifts of 1 px are not a whole "
                    f"step of this map; it keeps one position in {s}, so what it sees depends on the phase (aliasing)")
        return f"stride-1{groups} convolution: its map moves with its input, position for position (equivariant)"
    if isinstance(module, _POINTWISE):
        return f"{type(module).__name__} acts on each position alone: it keeps its input's equivariance"
    if isinstance(module, (nn.Linear, nn.Flatten)):
        return "after global pooling or flattening: one vector for the whole image"
    if next(module.children(), None) is not None:
        strided = _strided(module)
        inside = f" (inside: {', '.join(strided)})" if strided else ""
        skip = getattr(module, "use_res_connect", None)    # torchvision's inverted residuals say so
        added = ("; its skip connection adds the input back at the same positions" if skip
                 else "; it has no skip connection" if skip is False else "")
        return f"block ending in {type(_last_leaf(module)).__name__}{inside}: as equivariant as its layers{added}"
    return f"{type(module).__name__}"


def _padding(module: nn.Module) -> str:
    """The padding note: zeros do not move with the content, circular padding does."""
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))]
    padded = [m for m in convs if max(_pair(m.padding)) > 0] if convs else []
    if not padded:
        return ""
    if all(getattr(m, "padding_mode", "zeros") == "circular" for m in padded):
        return "Circular padding: a wrapped shift is an exact symmetry of this layer."
    p = _pair(padded[-1].padding)[1]
    return (f"Zero padding {p}: positions near the border see zeros that do not move with the content, "
            f"so only the interior of the map is compared.")


def why(module: nn.Module, field, transform: str, boundary: str = "crop") -> str:
    """Hover text for a layer (`module`, its Field or None) under `transform` ('shift', 'flip', 'rotate',
    'scale')."""
    if field is None:
        return f"{_kind(module, None)}. Not in the traced graph: no receptive field, so no equivariance is measured."
    if field.whole:
        return (f"{_kind(module, None)}. It sees the whole image, so there is no map to move: only its invariance "
                f"(the pooled cosine) is measured.")
    jump, start = field.jump[1], field.start[1]
    parts = [_kind(module, jump) + "."]
    if transform == "shift":
        if jump > 1:
            parts.append(f"Its jump is {jump:g} px (the strides before it, multiplied): shifts that are multiples "
                         f"of {jump:g} px move it by whole positions; other shifts have no exact counterpart in "
                         f"this map (shown as missing).")
        else:
            parts.append("Its jump is 1 px: every whole-pixel shift moves it by whole positions.")
        if boundary == "crop":
            parts.append("New content enters at the border (the crop moves over the photo).")
    elif transform == "flip":
        parts.append(f"The flip is mirrored about the map's centre (start {start:g} px, jump {jump:g} px). Learned "
                     f"filters are not mirror-symmetric, so channels answer the mirrored image differently unless "
                     f"training made mirrored pairs (Lenc & Vedaldi 2015); pooled features can still agree.")
    else:
        parts.append("Compared by resampling the map: a convolution has no built-in rotation or scale symmetry, "
                     "only what training taught it.")
    padding = _padding(module)
    if padding:
        parts.append(padding)
    return " ".join(parts)
