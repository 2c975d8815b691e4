"""What the Dataset panel and `cnnviewer export` draw from an index: a unit's top images with their
maximally activating patches and its histogram over the folder, and an image's nearest neighbours.

Pictures are plain (H, W, 3) uint8 arrays (Qt-free). A patch is the theoretical receptive field of
the max position mapped into the original image; where the field reaches beyond the image it is
padded with the preprocessing's mean colour (what zero padding of the normalised input is), never
stretched, so every patch of a layer has the same scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cnnviewer.engine.dataset.display import PATCH_SIDE, PICTURE_SIDE, fitted, resampling
from cnnviewer.engine.dataset.index import DatasetIndex
from cnnviewer.engine.dataset.patches import patch_box
from cnnviewer.engine.errors import CnnViewerError
from cnnviewer.engine.models.handle import Preprocess
from cnnviewer.engine.structure.summary import Field
from cnnviewer.engine.types import LayerId

BOX_COLOUR = (255, 200, 0)


@dataclass(frozen=True)
class TopImage:
    """One of a unit's top images."""

    row: int
    path: Path
    value: float
    position: tuple[int, int]                              # (y, x) of the maximum in the layer's map
    box: tuple[float, float, float, float] | None          # its field in the original image (x0, y0, x1, y1)
    picture: np.ndarray                                    # the image, its field outlined
    patch: np.ndarray | None                               # the field's pixels (None: the field is the image)


@dataclass(frozen=True)
class UnitView:
    """A unit's answer: its top images and its activation over the whole folder."""

    layer: LayerId
    channel: int
    images: list[TopImage]
    counts: np.ndarray          # histogram of the per-image maximum
    edges: np.ndarray
    images_indexed: int
    field_size: tuple[float, float] | None
    neuron: tuple[int, int] | None = None      # ranked by the value at this (y, x), not the channel's max


@dataclass(frozen=True)
class NeighbourImage:
    row: int
    path: Path
    similarity: float
    picture: np.ndarray


def _open(path: Path) -> Image.Image | None:
    from cnnviewer.engine.media.images import load_image
    try:
        image = load_image(path)
    except CnnViewerError:       # changed or removed since it was indexed
        return None
    picture = Image.fromarray(np.asarray(image.pixels))
    picture.info["scale"] = picture.width / max(image.original_size[0], 1)
    return picture


def _missing(side: int) -> np.ndarray:
    return np.full((side, side, 3), 60, np.uint8)


def cut_patch(picture: Image.Image, box: tuple[float, float, float, float], fill: tuple[int, int, int],
              side: int = PATCH_SIDE) -> np.ndarray:
    """The pixels under `box` (original-image coordinates; may reach past the edges), padded with
    `fill` outside the image, resized to side × side."""
    scale = picture.info.get("scale", 1.0)
    x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
    width, height = max(x1 - x0, 1), max(y1 - y0, 1)
    canvas = Image.new("RGB", (width, height), fill)
    inside = (max(x0, 0), max(y0, 0), min(x1, picture.width), min(y1, picture.height))
    if inside[2] > inside[0] and inside[3] > inside[1]:
        canvas.paste(picture.crop(inside), (inside[0] - x0, inside[1] - y0))
    return np.asarray(canvas.resize((side, side), resampling(max(width, height), side)))


def _outlined(picture: Image.Image, box: tuple[float, float, float, float] | None, side: int) -> np.ndarray:
    shown = fitted(picture, side)
    if box is None:
        return np.asarray(shown)
    factor = picture.info.get("scale", 1.0) * shown.width / picture.width
    x0, y0, x1, y1 = (v * factor for v in box)
    pixels = np.asarray(shown).copy()
    inside = np.zeros(pixels.shape[:2], bool)      # outside the field is dimmed: a box reaching past an
    inside[max(int(y0), 0):max(int(np.ceil(y1)), 0), max(int(x0), 0):max(int(np.ceil(x1)), 0)] = True   # edge reads right
    pixels[~inside] = (pixels[~inside] * 0.4).astype(np.uint8)
    outlined = Image.fromarray(pixels)
    ImageDraw.Draw(outlined).rectangle((x0, y0, x1 - 1, y1 - 1), outline=BOX_COLOUR, width=2)
    return np.asarray(outlined)


def unit_view(index: DatasetIndex, layer: LayerId, channel: int, k: int, preprocess: Preprocess,
              field: Field | None, bins: int = 40, scan=None) -> UnitView:
    """`channel` of `layer`: its k top images (one per image), their patches, and its histogram;
    with a finished NeuronScan `scan`, those of its one neuron instead."""
    values = index.values(layer, channel) if scan is None else scan.finite_values()
    counts, edges = np.histogram(values, bins=bins) if len(values) else (np.zeros(0), np.zeros(1))
    fill = tuple(int(round(255 * m)) for m in preprocess.mean)
    images = []
    for hit in (index.top(layer, channel, k) if scan is None else scan.top(k)):
        box = patch_box(field, hit.position, hit.original_size, preprocess) if field is not None else None
        picture = _open(hit.path)
        if picture is None:
            images.append(TopImage(hit.row, hit.path, hit.value, hit.position, box, _missing(PICTURE_SIDE),
                                   None if box is None else _missing(PATCH_SIDE)))
            continue
        patch = cut_patch(picture, box, fill) if box is not None else None
        images.append(TopImage(hit.row, hit.path, hit.value, hit.position, box,
                               _outlined(picture, box, PICTURE_SIDE), patch))
    return UnitView(layer, channel, images, counts, edges, len(values),
                    None if field is None or field.whole else tuple(field.size),
                    None if scan is None else tuple(scan.position))


def neighbour_view(index: DatasetIndex, features: np.ndarray, layer: LayerId, k: int) -> list[NeighbourImage]:
    """The k images most like `features` at `layer`, with their pictures."""
    found = []
    for hit in index.nearest(features, layer, k):
        picture = _open(hit.path)
        found.append(NeighbourImage(hit.row, hit.path, hit.similarity,
                                    _missing(PICTURE_SIDE) if picture is None else _outlined(picture, None, PICTURE_SIDE)))
    return found

