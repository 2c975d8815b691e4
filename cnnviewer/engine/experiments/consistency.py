"""Zhang 2019's shift consistency, and the larger preprocessed view that shifts crop from.

A real translation brings new content in at one border: instead of rolling the model's crop, the
crop window moves inside a larger view of the same resized photo. Zhang ("Making convolutional
networks shift-invariant again", ICML 2019; adobe/antialiased-cnns main.py `validate_shift`) resizes
to 256, centre-crops 256 and, per image, compares the top-1 class of two 224 crops at independent
random offsets in [0, 32)²: consistency is the fraction of such pairs whose top-1 classes agree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from cnnviewer.engine.errors import Cancelled, ImageError
from cnnviewer.engine.media.images import InputImage, load_image
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.inference import input_statistics
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor


def larger_view(model: LoadedModel, image: InputImage, margin: tuple[int, int]) -> Tensor:
    """(1, C, S + 2·my, S + 2·mx): the normalised, resized photo centre-cropped with `margin` extra
    pixels on each side, so the model's own crop is its centre. Where the photo ends the view is 0
    after normalising (the mean colour), not black, so a crop that runs off it sees no hard edge."""
    p = model.preprocess
    pixels = torch.from_numpy(np.array(image.pixels)).permute(2, 0, 1)
    pixels = TF.resize(pixels, [p.resize_size], antialias=True, interpolation=TF.InterpolationMode(p.interpolation))
    tensor = pixels.to(torch.float32).div_(255.0)
    if model.input_channels == 1:
        tensor = TF.rgb_to_grayscale(tensor)
    tensor = TF.normalize(tensor, *input_statistics(p.mean, p.std, model.input_channels))
    size = p.crop_size
    tensor = TF.center_crop(tensor, [size + 2 * margin[0], size + 2 * margin[1]])
    return tensor.unsqueeze(0).to(device=model.device, dtype=model.dtype)


def crop(view: Tensor, top: int, left: int, size: int) -> Tensor:
    """The size × size window of `view` at (top, left)."""
    return view[..., top:top + size, left:left + size]


@dataclass(frozen=True)
class Consistency:
    """Zhang's consistency over images: the share of random shift pairs with the same top-1."""

    value: float                                   # agreeing pairs / pairs
    pairs: int                                     # pairs compared, over all images
    per_image: tuple[float, ...]                   # each image's share, in order
    offsets: tuple[tuple[int, int, int, int], ...]  # (y0, x0, y1, x1) per pair, in order
    skipped: tuple[str, ...] = ()                  # unreadable files

    def to_json(self) -> dict:
        return {"value": self.value, "pairs": self.pairs, "per_image": list(self.per_image),
                "offsets": [list(o) for o in self.offsets], "skipped": list(self.skipped)}


def consistency_details(model: LoadedModel, images: Sequence[InputImage | str | Path], *, max_shift: int = 32,
                        pairs: int = 5, seed: int = 0, cancel: threading.Event | None = None,
                        progress: Callable[[float], None] | None = None) -> Consistency:
    """Zhang 2019's consistency with its details (see `consistency`)."""
    if max_shift < 1 or pairs < 1:
        raise ValueError("max_shift and pairs must be at least 1")
    rng = np.random.default_rng(seed)
    size = model.preprocess.crop_size
    # Zhang's view: resize, centre-crop crop + max_shift (256 for 224), offsets 0..max_shift-1.
    low, high = max_shift // 2, max_shift - max_shift // 2
    agree_all, per_image, offsets, skipped = 0, [], [], []
    for number, item in enumerate(images):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        try:
            image = item if isinstance(item, InputImage) else load_image(item)
        except ImageError:
            skipped.append(str(item))
            continue
        view = larger_view(model, image, (high, high))
        view = view[..., high - low:, high - low:] if low != high else view   # exactly size + max_shift
        drawn = rng.integers(0, max_shift, size=(pairs, 4))
        batch = torch.cat([torch.cat([crop(view, int(a), int(b), size), crop(view, int(c), int(d), size)])
                           for a, b, c, d in drawn])
        with eval_mode(model.module), torch.inference_mode():
            logits = first_tensor(model.module(batch))
        top = logits.reshape(logits.shape[0], -1).argmax(dim=1).view(pairs, 2).cpu().numpy()
        agree = int((top[:, 0] == top[:, 1]).sum())
        agree_all += agree
        per_image.append(agree / pairs)
        offsets.extend(tuple(int(v) for v in row) for row in drawn)
        if progress is not None:
            progress((number + 1) / max(1, len(images)))
    count = len(per_image) * pairs
    return Consistency(agree_all / count if count else float("nan"), count, tuple(per_image), tuple(offsets),
                       tuple(skipped))


def consistency(model: LoadedModel, images: Sequence[InputImage | str | Path], *, max_shift: int = 32,
                pairs: int = 5, seed: int = 0, cancel: threading.Event | None = None,
                progress: Callable[[float], None] | None = None) -> float:
    """Zhang 2019's consistency: over `pairs` random pairs of 2-D crop offsets in [0, max_shift)² per
    image, the fraction whose top-1 classes agree (1.0: the decision never moves with the crop)."""
    return consistency_details(model, images, max_shift=max_shift, pairs=pairs, seed=seed, cancel=cancel,
                               progress=progress).value
