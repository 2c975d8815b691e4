"""How dataset pictures are sized and their values written, shared by the Dataset panel and
`cnnviewer export` (numpy and Pillow only: the panel imports it without torch)."""

from __future__ import annotations

import numpy as np
from PIL import Image

PICTURE_SIDE = 224   # the top images and neighbours, longest side (the panel's grid shrinks them to fit)
PATCH_SIDE = 96
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120), (152, 223, 138)]
OTHER = (110, 110, 110)


def colours_for(labels: np.ndarray) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """A colour per point: the most frequent labels get the palette, the rest grey.
    Returns the colours and [(label, count)] of the coloured labels, most frequent first."""
    values, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:len(PALETTE)]
    colour_of = {int(values[i]): PALETTE[rank] for rank, i in enumerate(order)}
    return [colour_of.get(int(label), OTHER) for label in labels], [(int(values[i]), int(counts[i])) for i in order]


def resampling(size: int, side: int) -> Image.Resampling:
    """Nearest neighbour when a tiny picture (a 28 px Fashion-MNIST image) is blown up at least 2x:
    its pixels stay sharp squares instead of a blur; bilinear otherwise."""
    return Image.Resampling.NEAREST if 2 * size <= side else Image.Resampling.BILINEAR


def fitted(picture: Image.Image, side: int) -> Image.Image:
    """`picture` scaled so its longest side is `side`, up as well as down: a 28 px image is shown as
    large as a photo's thumbnail, like its patch beside it."""
    factor = side / max(picture.width, picture.height, 1)
    size = (max(1, round(picture.width * factor)), max(1, round(picture.height * factor)))
    return picture.resize(size, resampling(max(picture.width, picture.height), side))


def value_format(values: list[float]) -> str:
    """One format for a list of values: 3 significant digits of the largest, the same decimals for
    all, so "0.600" stands beside "0.598" (not "0.6")."""
    largest = max((abs(v) for v in values if np.isfinite(v)), default=0.0)
    if largest >= 1e5 or 0 < largest < 1e-3:
        return ".3g"
    decimals = 2 - int(np.floor(np.log10(largest))) if largest > 0 else 3
    return f".{min(max(decimals, 0), 5)}f"
