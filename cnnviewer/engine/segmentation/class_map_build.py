"""Build a ClassMapView from a recorded forward pass (job thread: uses torch)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnviewer.engine.errors import ViewError
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.inference import ForwardPass
from cnnviewer.engine.segmentation.class_map_view import ClassMapView, legend_of
from cnnviewer.engine.segmentation.overlay import crop_extent, palette


def class_map_view(model: LoadedModel, recorded: ForwardPass) -> ClassMapView:
    """The recorded pass's own output read as a class map: no second forward pass.

    A map coarser than the crop is upsampled as probabilities (bilinear) before the argmax, as FCN
    upsamples its scores, so class borders fall between output positions rather than on a grid.

    Raises:
        ViewError: the model's output is not a (K, h, w) class map.
    """
    output = recorded.activations.get("")
    if output is None or output.dim() != 3:
        shape = "×".join(map(str, output.shape)) if output is not None else "nothing"
        raise ViewError(f"{model.title} gives no class map (its output is {shape}, not classes × height × width)")
    scores = output.float()
    probabilities = torch.softmax(scores, dim=0)
    height, width = recorded.display.shape[:2]
    grid = tuple(int(s) for s in probabilities.shape[1:])
    if grid != (height, width):
        labels, confidence = upsampled_argmax(probabilities, height, width)
    else:
        confidence, labels = probabilities.max(dim=0)
    labels_np = labels.to(torch.int32).numpy()
    confidence_np = confidence.numpy().astype("float32", copy=False)
    pixels = recorded.image.pixels
    extent = crop_extent(pixels.shape[0], pixels.shape[1], model.preprocess.resize_size, model.preprocess.crop_size)
    legend = legend_of(labels_np, confidence_np, model.label)
    colours = palette(int(probabilities.shape[0]))
    # The classes present take the palette's first colours, largest first: hues by class index put
    # tiger cat, ibex and chocolate sauce all in green; by rank, neighbours in the legend differ.
    ranked = [entry.class_index for entry in legend]
    present = set(ranked)
    order = ranked + [c for c in range(len(colours)) if c not in present]
    colours = colours[np.argsort(order)]
    return ClassMapView(model_token=model.token, image=recorded.image, labels=labels_np, confidence=confidence_np,
                        grid=grid, grid_labels=probabilities.argmax(dim=0).to(torch.int32).numpy(),
                        legend=legend, colours=colours, extent=extent)


FEW_CLASSES = 64   # up to this many classes, upsample them all (64 × 520² floats: 69 MB)


def _source(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output index: the two source indices and the second one's weight, as F.interpolate's
    bilinear mode with align_corners=False computes them (half-pixel centres, clamped at the edges)."""
    position = ((torch.arange(size_out, dtype=torch.float32) + 0.5) * (size_in / size_out) - 0.5).clamp(min=0)
    first = position.floor().long().clamp(max=size_in - 1)
    second = (first + 1).clamp(max=size_in - 1)
    return first, second, position - first


def upsampled_argmax(probabilities: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, confidence), each (height, width): the argmax and max of the (K, h, w) probabilities
    upsampled bilinearly, as F.interpolate(..., align_corners=False) then max(dim=0) gives them.

    Upsampling every class does not scale: 1000 ImageNet classes of a 14×14 map at 448×448 are 800 MB
    and ~3 s of one thread. Each output pixel is a weighted mean of one 2×2 block of grid positions, so
    its winner scores at least max_c min_block p_c, and class c at most max_block p_c: per block, only
    the classes that clear that bound are computed (a handful where the map is confident). Exact: the
    same arithmetic on fewer classes, not a heuristic. Measured (one thread, MobileNetV2's 14×14 map
    of three photos to 448×448): 0.12 s against 5.5 s for all classes, the same labels.
    """
    count, rows, columns = probabilities.shape
    if count <= FEW_CLASSES:     # e.g. VOC's 21: all of them upsampled at once is small and quicker
        confidence, labels = F.interpolate(probabilities[None], size=(height, width), mode="bilinear",
                                           align_corners=False)[0].max(dim=0)
        return labels, confidence
    y0, y1, wy = _source(rows, height)
    x0, x1, wx = _source(columns, width)
    below = torch.cat([probabilities[:, 1:], probabilities[:, -1:]], dim=1)
    high, low = torch.maximum(probabilities, below), torch.minimum(probabilities, below)
    high = torch.maximum(high, torch.cat([high[:, :, 1:], high[:, :, -1:]], dim=2))     # (K, h, w) per block
    low = torch.minimum(low, torch.cat([low[:, :, 1:], low[:, :, -1:]], dim=2))
    passes = high >= low.max(dim=0).values                                            # (K, h, w)
    labels = torch.empty(height, width, dtype=torch.long)
    confidence = torch.empty(height, width, dtype=torch.float32)
    row_sets = [(r, (y0 == r).nonzero().flatten()) for r in range(rows)]
    column_sets = [(c, (x0 == c).nonzero().flatten()) for c in range(columns)]
    for r, ys in row_sets:
        if not len(ys):
            continue
        r1, ry = min(r + 1, rows - 1), wy[ys].view(1, -1, 1)
        for c, xs in column_sets:
            if not len(xs):
                continue
            classes = passes[:, r, c].nonzero().flatten()
            c1, cx = min(c + 1, columns - 1), wx[xs].view(1, 1, -1)
            corners = probabilities[classes][:, [r, r1]][:, :, [c, c1]]              # (C, 2, 2)
            top = corners[:, 0, 0, None, None] * (1 - cx) + corners[:, 0, 1, None, None] * cx
            bottom = corners[:, 1, 0, None, None] * (1 - cx) + corners[:, 1, 1, None, None] * cx
            best, winner = (top * (1 - ry) + bottom * ry).max(dim=0)                     # (rows, columns)
            labels[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = classes[winner]
            confidence[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = best
    return labels, confidence
