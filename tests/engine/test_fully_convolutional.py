"""Issue 25, "classes as local patterns": a classifier whose head is global average pooling + one
linear layer, run fully convolutionally. Exact where it must be (the mean of the class map's logits is
the classifier's logits) and right where it can be checked (a cat on the left, coffee on the right),
with the real offline weights; heads of another form are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from cnnviewer.engine.errors import ModelError
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.handle import wrap_module
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input
from cnnviewer.engine.segmentation.fully_convolutional import class_map, fully_convolutional

CATS = {281, 282, 283, 284, 285}          # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}                  # espresso, cup, coffee mug


def picture(pixels: np.ndarray, name: str) -> InputImage:
    return InputImage(np.ascontiguousarray(pixels), name, (pixels.shape[1], pixels.shape[0]))


@pytest.mark.parametrize("spec", ["mobilenet_v2", "timm:tf_efficientnet_lite0", "resnet18"])
def test_the_class_maps_mean_is_the_classifiers_logits(spec, one_torch_thread):
    """MobileNetV2 and EfficientNet-Lite0 with their real offline weights; resnet18 untrained (random)."""
    model = load_model(spec, allow_download=False)
    modes = [m.training for m in model.module.modules()]
    split = fully_convolutional(model)
    inputs = prepare_input(picture(data.chelsea(), "chelsea"), model.preprocess, model.device).tensor
    with torch.inference_mode():
        torch.testing.assert_close(split.logits(inputs).mean(dim=(2, 3)), model.module(inputs),
                                   rtol=1e-4, atol=1e-4)
    assert not has_hooks(model.module) and [m.training for m in model.module.modules()] == modes


def test_a_cat_on_the_left_and_coffee_on_the_right(one_torch_thread):
    model = load_model("mobilenet_v2")
    both = Image.new("RGB", (800, 300))
    both.paste(Image.fromarray(data.chelsea()).resize((400, 300)), (0, 0))
    both.paste(Image.fromarray(data.coffee()).resize((400, 300)), (400, 0))
    found = class_map(model, picture(np.asarray(both), "cat-and-coffee"))
    half = found.labels.shape[1] // 2
    left = np.bincount(found.labels[:, :half].ravel()).argmax()
    right = np.bincount(found.labels[:, half:].ravel()).argmax()
    assert left in CATS and right in COFFEE, (model.label(left), model.label(right))
    assert found.probabilities.shape[0] == 1000
    np.testing.assert_allclose(found.probabilities.sum(axis=0), 1.0, atol=1e-4)
    shares = found.area()
    assert abs(sum(share for _c, share in shares) - 1.0) < 1e-6 and shares[0][1] >= shares[-1][1]


@pytest.mark.parametrize("head, why", [
    (nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)), "not global"),
    (nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4)), "not global"),
])
def test_other_heads_are_refused_in_one_line(head, why):
    """Two linear layers after the pooling (VGG-like), or a pooled grid instead of one value."""
    model = wrap_module(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), head), "tiny")
    with pytest.raises(ModelError, match=why) as raised:
        fully_convolutional(model)
    assert "\n" not in str(raised.value)


def test_seg_grad_cam_of_a_region_equals_pytorch_grad_cam(one_torch_thread):
    """Grad-CAM of "Egyptian cat" summed over the left half of the class map (a region target) equals
    pytorch-grad-cam's GradCAM with SemanticSegmentationTarget (test-only oracle), real MobileNetV2."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from cnnviewer.engine.attribution.gradients import grad_cam
    from cnnviewer.engine.attribution.target import Target
    from cnnviewer.engine.segmentation.fully_convolutional import ClassMapNet, prepared_whole

    model = load_model("mobilenet_v2")
    net = ClassMapNet(fully_convolutional(model)).eval()
    inputs = prepared_whole(picture(data.chelsea(), "chelsea"), model, max_side=320)
    with torch.no_grad():
        height, width = net(inputs).shape[-2:]
    region = (0, 0, height, width // 2)
    layer = "features.18.2"     # the traced graph calls the leaves, not the block
    ours = grad_cam(net, inputs, Target(class_index=285, region=region), layer, upsample=False)[0, 0]
    mask = np.zeros((height, width), np.float32)
    mask[:, : width // 2] = 1
    with GradCAM(model=net, target_layers=[net.get_submodule(layer)]) as cam:
        cam.compute_input_gradient = False
        activations_and_grads = cam.activations_and_grads
        outputs = activations_and_grads(inputs.clone().requires_grad_(True))   # the weights are frozen
        cam.model.zero_grad()
        sum(SemanticSegmentationTarget(285, mask)(o) for o in outputs).backward(retain_graph=True)
        activation = activations_and_grads.activations[0]
        gradient = activations_and_grads.gradients[0]
        theirs = cam.get_cam_image(inputs, net.get_submodule(layer), [SemanticSegmentationTarget(285, mask)],
                                   activation.cpu().numpy(), gradient.cpu().numpy(), False)[0]
    np.testing.assert_allclose(ours.detach().numpy(), np.maximum(theirs, 0), rtol=1e-4, atol=1e-5)
    whole = grad_cam(net, inputs, Target(class_index=285), layer, upsample=False)[0, 0]
    assert not torch.allclose(whole, ours, rtol=1e-2, atol=1e-3)      # the region is what is explained
    assert not has_hooks(model.module) and not has_hooks(net)


def test_one_class_map_position_sees_only_its_receptive_field(one_torch_thread):
    """The gradient of one position's class score is zero outside that position's theoretical field
    (the summary's size, jump and start for features.18), and not zero inside it."""
    from cnnviewer.engine.attribution.gradients import saliency
    from cnnviewer.engine.attribution.target import Target
    from cnnviewer.engine.segmentation.fully_convolutional import ClassMapNet, prepared_whole
    from cnnviewer.engine.workbench import Workbench

    model = load_model("mobilenet_v2")
    field = Workbench().summary(model).fields["features.18"]
    net = ClassMapNet(fully_convolutional(model)).eval()
    inputs = prepared_whole(picture(np.asarray(Image.fromarray(data.coffee()).resize((576, 384))), "coffee"),
                            model, max_side=576)
    row, column = 2, 3
    gradient = saliency(net, inputs, Target(class_index=967, region=(row, column, row + 1, column + 1)))[0]
    touched = gradient.abs().sum(dim=0) > 0
    ys, xs = torch.nonzero(touched, as_tuple=True)
    for found, index, axis in ((ys, row, 0), (xs, column, 1)):
        centre = field.start[axis] + index * field.jump[axis]      # in pixels, 0.5 = the first pixel's centre
        low, high = centre - field.size[axis] / 2, centre + field.size[axis] / 2
        assert low - 1 <= found.min().item() + 0.5 and found.max().item() + 0.5 <= high + 1, (axis, low, high)
    assert touched.sum() > 0 and not touched.all()          # a 576 px wide input is wider than the field
