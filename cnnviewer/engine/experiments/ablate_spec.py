"""What a knock-out is, as plain data, and the CLI's `LAYER:C1,C2[:zero|mean|scale=F]` spelling of one.

Torch-free: the window's thread builds and lists Knockouts (the feature-maps menu, the strip)
before torch is loaded; `knockout.py` applies them on the job thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnnviewer.engine.errors import CnnViewerError

MODES = ("zero", "mean", "scale")
MAX_CHANNELS_SHOWN = 6


class AblationError(CnnViewerError):
    """A knock-out that cannot be applied (bad spec, unknown layer, channel out of range)."""


@dataclass(frozen=True)
class Knockout:
    """Channels of one layer replaced in the forward pass: by zero, by a mean, or scaled.

    Attributes:
        layer: dotted `named_modules()` name, e.g. 'features.14.conv.0'.
        channels: output channels (dimension 1 of the layer's output) to change.
        mode: 'zero', 'mean' (each channel becomes the constant `means[i]`) or 'scale' (times `factor`).
        factor: the multiplier for 'scale'.
        means: one value per channel of `channels`, for 'mean'.
        source: where the means came from, shown to the user ('this image', 'folder photos/ (120 images)').
    """

    layer: str
    channels: tuple[int, ...]
    mode: str = "zero"
    factor: float = 0.0
    means: tuple[float, ...] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AblationError(f"unknown knock-out mode {self.mode!r}; choose {', '.join(MODES)}")
        if not self.channels:
            raise AblationError(f"{self.layer}: a knock-out needs at least one channel")
        if any(c < 0 for c in self.channels):
            raise AblationError(f"{self.layer}: channels are 0 or more")
        if self.mode == "mean" and (self.means is None or len(self.means) != len(self.channels)):
            raise AblationError(f"{self.layer}: 'mean' needs one mean per channel")

    def describe(self) -> str:
        """One line for the strip, e.g. 'features.14.conv.0 ch 3,7: zero'."""
        shown = ",".join(str(c) for c in self.channels)
        if len(self.channels) > MAX_CHANNELS_SHOWN:     # the count first: the strip may shorten the rest
            shown = f"{len(self.channels)} ({','.join(str(c) for c in self.channels[:3])},…)"
        what = {"zero": "zero", "scale": f"scale ×{self.factor:g}",
                "mean": f"mean over {self.source or 'this image'}"}[self.mode]
        return f"{self.layer} ch {shown}: {what}"


def parse_channels(text: str, spec: str) -> tuple[int, ...]:
    """'3,7,10-12' -> (3, 7, 10, 11, 12), in the order given, without repeats."""
    found: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        try:
            values = range(int(low), int(high) + 1) if dash else [int(part)]
        except ValueError:
            raise AblationError(f"--ablate {spec!r}: {part!r} is not a channel number") from None
        if dash and int(high) < int(low):
            raise AblationError(f"--ablate {spec!r}: empty channel range {part!r}")
        found += [v for v in values if v not in found]
    return tuple(found)


def parse_ablation(text: str) -> Knockout:
    """Parse `LAYER:C1,C2[:zero|mean|scale=F]` (channel ranges as A-B).

    A 'mean' knock-out is returned with placeholder means (zeros) and source 'this image': the
    caller measures them on its input (`knockout.resolve_means`). Errors are one line.
    """
    parts = [part.strip() for part in text.strip().split(":")]
    if len(parts) not in (2, 3):
        raise AblationError(f"--ablate {text!r}: expected LAYER:C1,C2[:zero|mean|scale=F]")
    layer, channels_text, mode_text = parts[0], parts[1], parts[2] if len(parts) == 3 else "zero"
    if not layer or not channels_text:
        raise AblationError(f"--ablate {text!r}: expected LAYER:C1,C2[:zero|mean|scale=F]")
    channels = parse_channels(channels_text, text)
    mode_text = mode_text.strip().lower()
    if mode_text == "zero":
        return Knockout(layer, channels)
    if mode_text == "mean":
        return Knockout(layer, channels, "mean", means=(0.0,) * len(channels), source="this image")
    name, equals, value = mode_text.partition("=")
    if name == "scale" and equals:
        try:
            factor = float(value)
        except ValueError:
            raise AblationError(f"--ablate {text!r}: scale needs a number, e.g. scale=0.5") from None
        if not math.isfinite(factor):
            raise AblationError(f"--ablate {text!r}: scale needs a finite number")
        return Knockout(layer, channels, "scale", factor=factor)
    raise AblationError(f"--ablate {text!r}: mode {mode_text!r} is not zero, mean or scale=F")


@dataclass(frozen=True)
class InterventionEffect:
    """What the knock-outs changed in the prediction, for the predictions panel's ghost bars.

    Attributes:
        model_token: the intervened model this was computed for.
        intact: the intact model's probability of each class shown (the intervened top-5, in order).
        intact_top: the intact model's top-5 as (label, index, probability).
        knocked: the intervened model's probability of each class of `intact_top`.
    """

    model_token: int
    intact: tuple[float, ...]
    intact_top: tuple[tuple[str, int, float], ...]
    knocked: tuple[float, ...]

    def delta_points(self, row: int, probability: float) -> float:
        """Change of shown bar `row` in percentage points (intervened − intact)."""
        return 100.0 * (probability - self.intact[row])

    def left_top(self, shown: tuple[int, ...]) -> list[tuple[str, float, float]]:
        """(label, intact p, intervened p) of intact top-5 classes no longer among `shown` indices."""
        return [(label, p, self.knocked[i]) for i, (label, index, p) in enumerate(self.intact_top)
                if index not in shown]
