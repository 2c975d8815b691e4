"""Issue 25: the theoretical receptive field of one class-map pixel (segmentation.pixel_field). The
gradient of that pixel's scores is zero outside the computed box and reaches (within 2 px) each of
its edges, for the real MobileNetV2 made fully convolutional and for torchvision's LR-ASPP and
DeepLabV3 (MobileNetV3-Large, random weights: no segmentation weights offline), whose output is
upsampled bilinearly from stride-8/16 maps. Their global pooling (squeeze-and-excitation gates, the
scale branch, ASPP's image pooling) is held fixed, as the field's `context` says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.segmentation.fully_convolutional import fully_convolutional_model
from cnnviewer.engine.segmentation.pixel_field import output_pixel_field


class Out(nn.Module):
    """A torchvision segmentation model's 'out' (its class map at the input's size)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def gradient_extent(net: nn.Module, inputs: torch.Tensor, pixel: tuple[int, int], gates_fixed: bool):
    """(top, left, bottom, right) of the input pixels where the pixel's summed class scores have a gradient."""
    hooks = [m.register_forward_hook(lambda _m, _i, o: o.detach()) for m in net.modules()
             if gates_fixed and isinstance(m, nn.AdaptiveAvgPool2d)]
    x = inputs.clone().requires_grad_(True)
    try:
        output = net(x)
    finally:
        for hook in hooks:
            hook.remove()
    (gradient,) = torch.autograd.grad(output[0, :, pixel[0], pixel[1]].sum(), x)
    ys, xs = torch.nonzero(gradient[0].abs().sum(dim=0) > 0, as_tuple=True)
    return ys.min().item(), xs.min().item(), ys.max().item() + 1, xs.max().item() + 1


def assert_box_is_the_field(box, extent, input_hw) -> None:
    top, left, bottom, right = box
    assert top <= extent[0] and left <= extent[1] and extent[2] <= bottom and extent[3] <= right, (box, extent)
    assert all(abs(b - e) <= 2 for b, e in zip(box, extent)), (box, extent)       # reaches its edges
    assert (bottom - top, right - left) != tuple(input_hw), "a box of the whole input tests nothing"


def test_a_fully_convolutional_mobilenet_pixel(one_torch_thread):
    model = fully_convolutional_model(load_model("mobilenet_v2"), side=224)
    net = model.module
    inputs = torch.from_numpy(np.asarray(data.coffee(), np.float32) / 255 - 0.45).permute(2, 0, 1)[None]  # 400×600
    with torch.no_grad():
        height, width = net(inputs).shape[-2:]
    assert (height, width) == (13, 19)
    for pixel in ((2, 3), (6, 9), (12, 18)):
        found = output_pixel_field(net, None, pixel, (height, width), input_hw=(400, 600))
        assert not found.context                        # MobileNetV2 has no gates
        assert_box_is_the_field(found.box, gradient_extent(net, inputs, pixel, False), (400, 600))
    assert not has_hooks(net) and not net.training


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_an_upsampled_segmentation_pixel(name, one_torch_thread):
    """Input 256×1024: their fields are 400-900 px wide, so a pixel near one end does not see the other."""
    import torchvision

    torch.manual_seed(0)
    net = Out(torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=21,
                                           aux_loss=None)).eval()
    inputs = torch.randn(1, 3, 256, 1024)
    for pixel in ((100, 40), (10, 1000)):
        found = output_pixel_field(net, None, pixel, (256, 1024), input_hw=(256, 1024))
        assert found.context                            # squeeze-and-excitation gates, image pooling
        assert_box_is_the_field(found.box, gradient_extent(net, inputs, pixel, True), (256, 1024))
    with pytest.raises(ValueError, match="not a class map"):
        output_pixel_field(net, None, (0, 0), (32, 128), input_hw=(256, 1024))
    assert not has_hooks(net)


def test_the_workbench_draws_the_clicked_pixels_field(one_torch_thread):
    """Workbench.output_pixel_field: a one-pixel region of the 14×14 map of the 448-px crop gives that
    position's box, the class that wins there, and an effective field that stays inside the box."""
    from cnnviewer.engine.errors import ViewError
    from cnnviewer.engine.workbench import Workbench

    model = fully_convolutional_model(load_model("mobilenet_v2"))
    image = InputImage(np.ascontiguousarray(data.chelsea()), "chelsea", (451, 300))
    workbench = Workbench()
    output = workbench.cache.get(model, image).activations[""]
    assert tuple(output.shape) == (1000, 14, 14)
    field, picture = workbench.output_pixel_field(model, image, (0.0, 0.0, 0.01, 0.01))
    assert field.layer == "" and field.neuron == (0, 0) and picture.shape == (14, 14, 3)
    assert field.channel == int(output[:, 0, 0].argmax())
    expected = output_pixel_field(model.module, workbench.summary(model), (0, 0), (14, 14)).box
    assert field.box == tuple(float(v) for v in expected) and field.box[:2] == (0.0, 0.0) and field.box[2] < 448
    top, left, bottom, right = field.effective_extent
    assert bottom <= field.box[2] and right <= field.box[3]
    with pytest.raises(ViewError, match="several output pixels"):
        workbench.output_pixel_field(model, image, (0.0, 0.0, 0.5, 0.5))
    assert not has_hooks(model.module)
