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
        upsampled = F.interpolate(probabilities[None], size=(height, width), mode="bilinear",
                                  align_corners=False)[0]
    else:
        upsampled = probabilities
    confidence, labels = upsampled.max(dim=0)
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
