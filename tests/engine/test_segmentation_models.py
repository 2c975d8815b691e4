"""Issue 25: torchvision's segmentation networks as ordinary models. No segmentation weights are
offline, so every model here is built with random weights (seeded by name, as the app does), at
small inputs (128-160 px); the hub-cache test writes a random state dict where torchvision's file
would be."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cnnviewer.engine.errors import ModelError, WeightsError
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models import catalogue, pretrained
from cnnviewer.engine.models.loading import load_model, load_weights
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import predict
from cnnviewer.engine.runtime.recording import capture_activations
from cnnviewer.engine.runtime.tracing import trace
from cnnviewer.engine.segmentation import models as segmentation
from cnnviewer.engine.structure.architecture_graph import build_graph
from cnnviewer.engine.structure.summary_graph import summarize

NAMES = ["deeplabv3_mobilenet_v3_large", "deeplabv3_resnet101", "deeplabv3_resnet50", "fcn_resnet101",
         "fcn_resnet50", "lraspp_mobilenet_v3_large"]
VOC = ("__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
       "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty private torch hub cache."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def torchvision_model(name: str, seed: int, aux: bool = False) -> nn.Module:
    """torchvision's own network (dict output), random weights."""
    torch.manual_seed(seed)
    return torchvision.models.get_model(name, weights=None, weights_backbone=None, aux_loss=aux).eval()


def test_the_catalogue_has_a_segmentation_family(hub_dir):
    groups = catalogue.catalogue(include_timm=False)
    assert groups[segmentation.FAMILY] == NAMES == segmentation.segmentation_models()
    assert not set(NAMES) & set(catalogue.classification_models())     # classifiers stay classifiers
    assert all(catalogue.catalogue_status(name) == "untrained (offline)" for name in NAMES)
    assert segmentation.is_segmentation_name("fcn_resnet50") and not segmentation.is_segmentation_name("resnet50")
    with pytest.raises(ModelError, match="unknown segmentation model 'fcn_nope'"):
        segmentation.load_segmentation_model("fcn_nope")


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "fcn_resnet50"])
def test_a_model_answers_with_its_class_map_only(name, hub_dir, one_torch_thread):
    """Random weights. Same output as torchvision's dict['out'] with the same weights, same layer names
    (plus 'upsample'), traceable by fx with the same result, deep-copyable, 21 VOC classes."""
    model = load_model(name)
    assert not model.trained and model.weights_label.startswith("untrained: no weights offline")
    assert model.categories == VOC and len(model.categories) == 21
    assert model.preprocess.crop_size == model.preprocess.resize_size == segmentation.SQUARE_SIZES[name]
    assert not model.module.training and not any(p.requires_grad for p in model.module.parameters())
    original = torchvision_model(name, seed=0)
    original.load_state_dict(model.module.state_dict())
    names = {n for n, _ in original.named_modules()}
    assert set(model.layer_names) == names | {"upsample"}
    assert "aux_classifier" not in dict(model.module.named_children())
    assert type(model.module).__name__ == type(original).__name__
    inputs = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        output = model.module(inputs)
        assert isinstance(output, torch.Tensor) and output.shape == (1, 21, 128, 128)
        torch.testing.assert_close(output, original(inputs)["out"], rtol=0, atol=0)
        torch.testing.assert_close(trace(model.module)(inputs), output, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(copy.deepcopy(model.module)(inputs), output, rtol=0, atol=0)
    again = load_model(name)   # seeded by name: the same random weights at every launch
    assert torch.equal(next(again.module.parameters()), next(model.module.parameters()))


def test_the_recorded_pass_keeps_the_upsampled_map_and_predictions_name_voc_classes(hub_dir, one_torch_thread):
    """Random weights: the top-5 are VOC names with each class's probability averaged over the map."""
    model = load_model("lraspp_mobilenet_v3_large")
    inputs = torch.randn(1, 3, 128, 128)
    output, recorded = capture_activations(model.module, inputs)
    assert torch.equal(recorded["upsample"], output) and recorded["upsample"].shape == (1, 21, 128, 128)
    assert recorded["classifier"].shape == (1, 21, 16, 16)
    assert not has_hooks(model.module) and not model.module.training
    pixels = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    predictions = predict(model, InputImage(pixels, "noise", (300, 200)))
    assert len(predictions) == 5 and all(p.label in VOC for p in predictions)
    assert sum(p.probability for p in predictions) <= 1.0 + 1e-6


def test_weights_in_the_hub_cache_load_as_trained(hub_dir, monkeypatch, one_torch_thread):
    """A random state dict (aux head included, as torchvision's checkpoints have) written where
    torchvision's file would be: loaded by torchvision's builder, its hash prefix checked."""
    name = "deeplabv3_mobilenet_v3_large"
    weights = pretrained.default_weights(name)
    path = pretrained.hub_cache_path(weights)
    path.parent.mkdir(parents=True)
    state = torchvision_model(name, seed=5, aux=True).state_dict()
    assert any(key.startswith("aux_classifier.") for key in state)
    torch.save(state, path)
    assert catalogue.catalogue_status(name) == "torch hub cache"
    with pytest.raises(WeightsError, match="sha256 does not match"):   # our random file is not torchvision's
        load_model(name)
    checked = []
    monkeypatch.setattr(segmentation, "verify_hash_prefix", checked.append)
    model = load_model(name)
    assert checked == [path]
    assert model.trained and model.weights_label == "COCO_WITH_VOC_LABELS_V1 (torch hub cache)"
    own = model.module.state_dict()
    assert set(own) == {key for key in state if not key.startswith("aux_classifier.")}
    assert all(torch.equal(own[key], state[key]) for key in own)
    with torch.inference_mode():
        assert model.module(torch.randn(1, 3, 96, 96)).shape == (1, 21, 96, 96)


@pytest.mark.parametrize("aux", [True, False])
def test_a_users_weights_file_loads_into_the_current_segmentation_model(aux, hub_dir, tmp_path, one_torch_thread):
    """Random weights on both sides: the file's values end up in a class-map-only model."""
    name = "deeplabv3_mobilenet_v3_large"
    current = load_model(name)
    state = torchvision_model(name, seed=7, aux=aux).state_dict()
    path = tmp_path / "voc_finetuned.pth"
    torch.save(state, path)
    loaded = load_weights(path, current)
    assert loaded.name == name and loaded.trained and loaded.weights_label == "custom: voc_finetuned.pth"
    assert loaded.categories == VOC and isinstance(loaded.module, segmentation.DeepLabV3)
    own = loaded.module.state_dict()
    assert all(torch.equal(own[key], state[key]) for key in own)
    assert not torch.equal(own["classifier.4.weight"], current.module.state_dict()["classifier.4.weight"])
    with torch.inference_mode():
        assert loaded.module(torch.randn(1, 3, 64, 64)).shape == (1, 21, 64, 64)


def test_the_summary_and_the_graph_show_the_upsampling(hub_dir, one_torch_thread):
    """Random weights. LR-ASPP upsamples twice: 2x inside its head (F.interpolate, a graph node with
    its shape) and 8x to the input (the module 'upsample': a summary row)."""
    model = load_model("lraspp_mobilenet_v3_large")
    summary = summarize(model.module, (160, 160), name=model.name)
    assert summary.method == "torch.fx"
    row = summary.row("upsample")
    assert row.type == "Upsample" and row.output_shape == (21, 160, 160) and row.hyper == {"mode": "bilinear"}
    high = summary.row("classifier.high_classifier")    # after the head's 2x: jump 16 -> 8
    cbr = summary.row("classifier.cbr.2")
    assert cbr.rf_jump == (16.0, 16.0) and high.rf_jump == (8.0, 8.0)
    # bilinear 2x: each output reads input positions within one step of its source: size + 2 * 16
    assert high.rf_size[0] == cbr.rf_size[0] + 32 and high.rf_start[0] == cbr.rf_start[0] - 4
    assert row.rf_jump == (1.0, 1.0) and row.rf_size[0] == high.rf_size[0] + 16 and not row.rf_whole
    assert summary.final_map == "classifier.cbr.2"   # what its 1x1 classifiers read: Grad-CAM's default layer
    graph = build_graph(model.module, summary)
    resized = [node.output_shape for node in graph.nodes if node.label == "interpolate"]
    assert resized == [(128, 20, 20), (21, 160, 160)]
    assert not has_hooks(model.module)


def test_dilated_convolutions_widen_the_field_by_their_dilation(hub_dir, one_torch_thread):
    """Random weights. FCN's ResNet-50 replaces layer3's and layer4's strides by dilation 2 and 4:
    the jump stays 8 and a 3x3 convolution of dilation d adds d * 2 * 8 pixels (by hand)."""
    model = load_model("fcn_resnet50")
    summary = summarize(model.module, (128, 128), name=model.name)
    rows = {row.name: row for row in summary.rows}
    for block, dilation in (("backbone.layer3.1", 2), ("backbone.layer4.0", 2), ("backbone.layer4.1", 4)):
        conv1, conv2 = rows[f"{block}.conv1"], rows[f"{block}.conv2"]
        assert conv2.hyper["dilation"] == (dilation, dilation) and conv2.rf_jump == (8.0, 8.0)
        assert conv2.rf_size[0] - conv1.rf_size[0] == dilation * 2 * 8
    assert rows["upsample"].output_shape == (21, 128, 128) and rows["upsample"].rf_jump == (1.0, 1.0)
    assert summary.final_map == "classifier.2"    # the head's 512 channels, before its 1x1 classifier


def test_deeplabs_image_pooling_branch_adds_context_not_the_whole_image(hub_dir, one_torch_thread):
    """Random weights. ASPP concatenates atrous branches (rates 12, 24, 36 on a jump-16 map) with the
    whole image's mean spread over the map: the field is the widest atrous branch's, marked context."""
    model = load_model("deeplabv3_mobilenet_v3_large")
    summary = summarize(model.module, (128, 128), name=model.name)
    widest, before = summary.row("classifier.0.convs.3.0"), summary.field("classifier.0.convs.0.0")
    assert widest.hyper["dilation"] == (36, 36) and widest.rf_jump == (16.0, 16.0)
    assert widest.rf_size[0] == before.size[0] + 36 * 2 * 16     # convs.0 is 1x1: the backbone's field
    project = summary.row("classifier.0.project.0")
    assert not project.rf_whole and project.rf_context and project.rf_size == widest.rf_size
    assert summary.row("classifier.0.convs.4.1").rf_whole          # the pooled branch itself sees everything
    assert summary.final_map == "classifier.3"


class Dilated(nn.Module):
    """conv (3x3, dilation 2) -> conv (3x3, stride 2) -> conv (3x3, dilation 3) -> bilinear 2x."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.c = nn.Conv2d(2, 2, 3, padding=3, dilation=3)
        self.upsample = segmentation.Upsample()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.c(self.b(self.a(x))), x.shape[-2:])


def test_a_dilated_field_by_hand_and_no_gradient_outside_it(one_torch_thread):
    """Hand computation: a: size 5, jump 1, start 0.5; b: 7, 2, 0.5; c: 7 + 2*3*2 = 19, 2, 0.5;
    bilinear 2x: jump 1, start 0.5 + (0.25 - 0.5) * 2 = 0, size 19 + 2*2 = 23. The gradient of
    one output pixel is zero outside that box (and reaches past c's own 19 pixels)."""
    model = Dilated().eval()
    with torch.no_grad():
        for conv in (model.a, model.b, model.c):
            conv.weight.uniform_(0.1, 1.0)
    summary = summarize(model, (40, 40))
    rows = {row.name: row for row in summary.rows}
    assert (rows["a"].rf_size, rows["a"].rf_jump, rows["a"].rf_start) == ((5, 5), (1, 1), (0.5, 0.5))
    assert (rows["b"].rf_size, rows["b"].rf_jump, rows["b"].rf_start) == ((7, 7), (2, 2), (0.5, 0.5))
    assert (rows["c"].rf_size, rows["c"].rf_jump, rows["c"].rf_start) == ((19, 19), (2, 2), (0.5, 0.5))
    up = rows["upsample"]
    assert (up.rf_size, up.rf_jump, up.rf_start, up.output_shape) == ((23, 23), (1, 1), (0, 0), (2, 40, 40))
    inputs = torch.zeros(1, 1, 40, 40, requires_grad=True)
    for y, x in ((19, 20), (20, 21), (11, 26)):
        (gradient,) = torch.autograd.grad(model(inputs)[0, 0, y, x], inputs)
        top, left, bottom, right = summary.field("upsample").box(y, x)
        rows_hit = np.flatnonzero(gradient[0, 0].abs().amax(dim=1).numpy() > 0)
        cols_hit = np.flatnonzero(gradient[0, 0].abs().amax(dim=0).numpy() > 0)
        assert top <= rows_hit[0] and rows_hit[-1] + 1 <= bottom and left <= cols_hit[0] and cols_hit[-1] + 1 <= right
        assert cols_hit[-1] + 1 - cols_hit[0] > 19       # the upsampling reaches beyond c's field


def test_nn_upsample_moves_the_field_as_the_function_does(one_torch_thread):
    """torch's own nn.Upsample module (a leaf) and F.interpolate (traced through) give the same field."""
    layers = Dilated()
    functional = summarize(layers, (40, 40)).field("upsample")
    module = nn.Sequential(layers.a, layers.b, layers.c, nn.Upsample(scale_factor=2, mode="bilinear"))
    rows = summarize(module, (40, 40)).rows
    assert rows[-1].type == "Upsample" and rows[-1].output_shape == (2, 40, 40) and rows[-1].hyper == {"mode": "bilinear"}
    assert (rows[-1].rf_size, rows[-1].rf_jump, rows[-1].rf_start) == (functional.size, functional.jump, functional.start)
    nearest = summarize(nn.Sequential(layers.a, layers.b, nn.Upsample(scale_factor=2)), (40, 40)).rows[-1]
    assert (nearest.rf_size, nearest.rf_jump, nearest.rf_start) == ((9, 9), (1, 1), (-0.5, -0.5))   # 7 + 2 * 0.5 * 2


def test_a_segmentation_weights_file_is_recognised_while_a_classifier_is_current(tmp_path, one_torch_thread):
    """Random weights: an LR-ASPP state dict dropped on the real MobileNetV2 loads as LR-ASPP."""
    state = torchvision_model("lraspp_mobilenet_v3_large", seed=3).state_dict()
    path = tmp_path / "lraspp.pth"
    torch.save(state, path)
    assert segmentation.architecture_of(state) == "lraspp_mobilenet_v3_large"
    assert segmentation.architecture_of(torchvision.models.resnet18().state_dict()) is None
    loaded = load_weights(path, load_model("mobilenet_v2"))
    assert loaded.name == "lraspp_mobilenet_v3_large" and loaded.categories == VOC and loaded.trained
    assert loaded.preprocess.crop_size == 520 and isinstance(loaded.module, segmentation.LRASPP)
    own = loaded.module.state_dict()
    assert all(torch.equal(own[key], state[key]) for key in own)
