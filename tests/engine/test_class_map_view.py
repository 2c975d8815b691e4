"""The window's class map (ClassMapView) is the recorded pass's own output read as a class map: the
same per-pixel classes as running the class-map model again and upsampling (FCN's way), legend areas
that add up, and the crop's place in the image from overlay.crop_extent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data
from torch import nn

from cnnviewer.engine.errors import ViewError
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.handle import wrap_module
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.segmentation.class_map_build import upsampled_argmax
from cnnviewer.engine.segmentation.class_map_view import shown_alpha
from cnnviewer.engine.segmentation.fully_convolutional import fully_convolutional_model
from cnnviewer.engine.segmentation.overlay import crop_extent, palette
from cnnviewer.engine.workbench import Workbench

CATS = {281, 282, 283, 284, 285}
COFFEE = {967, 968, 504}


def cat_and_coffee() -> InputImage:
    both = Image.new("RGB", (600, 300))
    both.paste(Image.fromarray(data.chelsea()).resize((300, 300)), (0, 0))
    both.paste(Image.fromarray(data.coffee()).resize((300, 300)), (300, 0))
    pixels = np.asarray(both)
    return InputImage(np.ascontiguousarray(pixels), "cat-and-coffee", (600, 300))


def test_the_view_is_the_models_class_map_upsampled(one_torch_thread):
    """Real MobileNetV2 weights, run fully convolutionally on a 448-px centre square."""
    model = fully_convolutional_model(load_model("mobilenet_v2"))
    image = cat_and_coffee()
    bench = Workbench()
    view = bench.class_map(model, image)
    inputs = prepare_input(image, model.preprocess, model.device).tensor
    with torch.inference_mode():
        scores = model.module(inputs)[0]
    probabilities = torch.softmax(scores, dim=0)
    assert view.grid == tuple(probabilities.shape[1:]) == (14, 14)
    upsampled = F.interpolate(probabilities[None], size=(448, 448), mode="bilinear", align_corners=False)[0]
    confidence, labels = upsampled.max(dim=0)
    assert view.labels.shape == (448, 448) and view.labels.dtype == np.int32
    assert (view.labels == labels.numpy()).mean() > 0.999      # ties of float rounding aside
    np.testing.assert_allclose(view.confidence, confidence.numpy(), atol=1e-4)
    np.testing.assert_array_equal(view.grid_labels, probabilities.argmax(dim=0).numpy())
    half = view.labels.shape[1] // 2
    assert np.bincount(view.labels[:, :half].ravel()).argmax() in CATS
    assert np.bincount(view.labels[:, half:].ravel()).argmax() in COFFEE
    # The legend: classes by area, areas summing to 1, names from the model, mean probability of each.
    areas = [entry.area for entry in view.legend]
    assert abs(sum(areas) - 1.0) < 1e-6 and areas == sorted(areas, reverse=True)
    first = view.legend[0]
    assert first.name == model.label(first.class_index)
    mask = view.labels == first.class_index
    assert first.area == pytest.approx(mask.mean())
    assert first.mean_probability == pytest.approx(float(view.confidence[mask].mean()), rel=1e-5)
    assert view.extent == pytest.approx(crop_extent(300, 600, 448, 448))
    assert view.extent == pytest.approx((0.0, 0.25, 1.0, 0.75))
    colours = palette(1000)      # the classes present take its first colours, largest first
    np.testing.assert_array_equal(view.colours[[e.class_index for e in view.legend]], colours[:len(view.legend)])
    assert sorted(map(tuple, view.colours)) == sorted(map(tuple, colours))
    # What the window reads from it on its own thread.
    assert view.at(0.5, 0.1) == (int(view.labels[224, 44]), pytest.approx(float(view.confidence[224, 44])))
    assert view.at(1.2, 0.5) is None
    cls, region = view.output_cell(0.5, 0.1)
    assert cls == int(view.grid_labels[7, 1]) and region == pytest.approx((7 / 14, 1 / 14, 8 / 14, 2 / 14))
    assert view.box_class((0.0, 0.0, 1.0, 0.4)) in CATS
    alpha = shown_alpha(view, {first.class_index})
    np.testing.assert_array_equal(alpha == 255, mask)
    assert bench.cache.get(model, image) is bench.cache.get(model, image)   # the pass was reused, not rerun
    assert not has_hooks(model.module)


class _Tiny(nn.Module):
    """A small random class-map net (untrained): 3 classes at a quarter of the input's size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 4, stride=4)

    def forward(self, x):
        return self.conv(x)


def test_a_map_at_the_inputs_size_is_not_resampled_and_a_classifier_has_none(one_torch_thread):
    torch.manual_seed(0)
    model = wrap_module(_Tiny().eval(), "tiny")
    image = InputImage(np.ascontiguousarray(data.astronaut()[::4, ::4]), "astronaut", (128, 128))
    view = Workbench().class_map(model, image)
    size = model.preprocess.crop_size
    assert view.grid == (size // 4, size // 4) and view.labels.shape == (size, size)
    assert abs(sum(e.area for e in view.legend) - 1.0) < 1e-6 and len(view.colours) == 3
    classifier = load_model("mobilenet_v2")
    with pytest.raises(ViewError, match="no class map"):
        Workbench().class_map(classifier, image)


@pytest.mark.parametrize("classes, grid, size", [(100, (5, 9), (37, 61)), (200, (1, 1), (16, 16)),
                                                 (100, (14, 14), (448, 448)), (21, (7, 7), (224, 224))])
def test_the_upsampled_argmax_is_interpolate_then_max(classes, grid, size, one_torch_thread):
    """Only the classes that can win in each 2×2 block are upsampled: the same labels and probabilities
    as upsampling all of them (odd sizes, a 1×1 grid, peaked and flat maps)."""
    torch.manual_seed(1)
    for sharpness in (0.5, 6.0):
        probabilities = torch.softmax(torch.randn(classes, *grid) * sharpness, dim=0)
        labels, confidence = upsampled_argmax(probabilities, *size)
        full = F.interpolate(probabilities[None], size=size, mode="bilinear", align_corners=False)[0]
        expected_confidence, expected = full.max(dim=0)
        assert (labels == expected).float().mean() > 0.9999
        torch.testing.assert_close(confidence, expected_confidence, rtol=0, atol=1e-6)
