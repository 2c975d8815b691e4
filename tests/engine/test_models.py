"""Model catalogue, pretrained-weight resolution and loading weights into models."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path

import pytest
import torch
import torchvision

from cnnviewer.engine.errors import Cancelled, ModelError, WeightsError
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models import catalogue, pretrained
from cnnviewer.engine.models.catalogue import load_torchvision_model
from cnnviewer.engine.models.handle import WeightsSource
from cnnviewer.engine.models.loading import load_model, load_weights
from cnnviewer.engine.runtime.inference import predict


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty private torch hub cache."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def test_catalogue_groups_every_classification_model():
    groups = catalogue.catalogue()
    names = [name for entries in groups.values() for name in entries]
    segmentation = groups["Segmentation (torchvision)"]   # issue 25: FCN, DeepLabV3, LR-ASPP, one family
    torchvision_names = [name for name in names if not name.startswith("timm:") and name not in segmentation]
    assert sorted(torchvision_names) == catalogue.classification_models()
    assert "mobilenet_v2" in groups["MobileNet"] and "resnet50" in groups["ResNet"]
    assert "fasterrcnn_resnet50_fpn" not in names          # detection models are not classifiers
    assert len(torchvision_names) >= 70
    timm_names = [name for name in names if name.startswith("timm:")]   # timm's CNNs, by family
    assert len(timm_names) >= 300 and "timm:convnext_tiny" in groups["timm · ConvNeXt"]
    assert "timm:tf_efficientnet_lite0" in groups["timm · EfficientNet-Lite"]
    assert not any("vit_" in name or "swin" in name for name in timm_names)   # transformers are not listed
    assert catalogue.catalogue_status("timm:tf_efficientnet_lite0") == "offline weights pack"
    assert catalogue.catalogue_status("timm:resnet50") == "untrained (offline)"


def test_offline_pack_gives_real_mobilenet(hub_dir):
    model = load_torchvision_model("mobilenet_v2")
    assert model.trained and "offline weights pack" in model.weights_label
    assert model.weights_label.startswith("IMAGENET1K_V1")
    assert model.preprocess.resize_size == 256 and model.preprocess.crop_size == 224   # V1's metadata
    assert len(model.categories) == 1000
    assert not any(p.requires_grad for p in model.module.parameters())
    assert not model.module.training


def test_hub_cache_comes_first(hub_dir):
    pack = pretrained.offline_pack_path(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
    hub_dir.mkdir(parents=True)
    shutil.copy(pack, hub_dir / pack.name)
    weights, path, source = pretrained.find_pretrained("mobilenet_v2")
    assert source is WeightsSource.HUB_CACHE and path == hub_dir / pack.name
    model = load_torchvision_model("mobilenet_v2")
    assert "torch hub cache" in model.weights_label
    assert predict(model, sample_image("coffee"))[0].label == "espresso"


def test_without_weights_the_model_is_untrained(hub_dir):
    model = load_torchvision_model("resnet18", allow_download=True)   # CNNVIEWER_OFFLINE=1 in tests
    assert not model.trained and model.title == "resnet18 (untrained)"
    assert model.weights_label.startswith("untrained")
    assert len(model.categories) == 1000                 # names still come from the metadata


def test_an_untrained_model_has_the_same_weights_at_every_launch(hub_dir):
    """Trial row 36: seeded from the name, so an untrained demo repeats; the caller's RNG is untouched."""
    from cnnviewer.engine.models.timm_models import load_timm_model
    torch.manual_seed(1)
    expected_next = torch.rand(3)
    torch.manual_seed(1)
    for load, name in ((load_torchvision_model, "resnet18"), (load_timm_model, "timm:regnetx_002")):
        first, second = load(name), load(name)
        assert not first.trained and first.weights_label.startswith("untrained: no weights offline")
        for (key, a), b in zip(first.module.state_dict().items(), second.module.state_dict().values()):
            assert torch.equal(a, b), key
    assert torch.equal(torch.rand(3), expected_next)
    other = load_torchvision_model("resnet34").module.conv1.weight
    assert not torch.equal(other, load_torchvision_model("resnet18").module.conv1.weight)


def test_download_reports_progress_and_checks_the_hash(tmp_path):
    source = tmp_path / "source.pth"
    source.write_bytes(b"x" * 300_000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "cache" / f"net-{digest[:8]}.pth"
    seen: list[float] = []
    pretrained.download(source.as_uri(), target, progress=lambda f, _t: seen.append(f))
    assert target.read_bytes() == source.read_bytes()
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)

    wrong = tmp_path / "cache" / "net-deadbeef.pth"
    with pytest.raises(WeightsError, match="damaged"):
        pretrained.download(source.as_uri(), wrong)
    assert not wrong.exists()

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        pretrained.download(source.as_uri(), tmp_path / "cache" / "other.pth", cancel=cancel)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [target.name]   # no partial files


def test_unknown_model_and_device_fail_clearly():
    with pytest.raises(ModelError, match="unknown model"):
        load_torchvision_model("resnet9000")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA"):
            load_torchvision_model("mobilenet_v2", device="cuda")
    with pytest.raises(ModelError, match="GPU"):
        load_torchvision_model("mobilenet_v2", device="cpu", precision="fp16")


def test_weights_fit_the_current_architecture_first(tmp_path):
    torch.manual_seed(0)
    current = load_torchvision_model("mobilenet_v2")
    state = torchvision.models.mobilenet_v2().state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in state.items()}, "epoch": 1}, path)
    before = {k: v.clone() for k, v in current.module.state_dict().items()}
    loaded = load_weights(path, current)
    assert loaded.name == "mobilenet_v2" and loaded.trained and loaded.weights_path == str(path)
    assert loaded.token != current.token and loaded.module is not current.module
    torch.testing.assert_close(loaded.module.state_dict()["features.0.0.weight"], state["features.0.0.weight"])
    for key, value in current.module.state_dict().items():     # the shown model was not touched
        assert torch.equal(value, before[key])


def test_weights_of_another_architecture_are_inferred(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    current = load_torchvision_model("mobilenet_v2")
    loaded = load_weights(path, current)
    assert loaded.name == "resnet18"
    assert loaded.categories == tuple(f"class {i}" for i in range(10))
    assert loaded.module.fc.out_features == 10
    (tmp_path / "classes.txt").write_text("\n".join(f"digit {i}" for i in range(10)))
    assert load_weights(path, current).categories[3] == "digit 3"


def test_user_architecture_with_weights(tmp_path):
    source = tmp_path / "tiny.py"
    source.write_text(
        "import torch.nn as nn\n"
        "class Tiny(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n"
        "        self.pool = nn.AdaptiveAvgPool2d(1)\n"
        "        self.fc = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.pool(self.conv(x)).flatten(1))\n")
    model = load_model(f"{source}:Tiny")
    assert model.name == "tiny.py:Tiny" and not model.trained
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) for k, v in model.module.state_dict().items()}
    weights = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file
    save_file(state, weights)
    loaded = load_weights(weights, model)
    assert loaded.trained and loaded.name == "tiny.py:Tiny"
    assert torch.equal(loaded.module.fc.weight, state["fc.weight"])
    assert [p.label for p in predict(loaded, sample_image())] in (["class 0", "class 1"], ["class 1", "class 0"])


def test_a_hostile_hub_cache_file_runs_no_code(hub_dir, tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = pretrained.hub_cache_path(torchvision.models.ResNet18_Weights.DEFAULT)
    hub_dir.mkdir(parents=True)
    torch.save(Evil(), path)
    with pytest.raises(WeightsError):
        load_torchvision_model("resnet18")
    assert not (tmp_path / "pwned").exists()


def test_lightning_style_prefix_and_ignored_entries(tmp_path):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=5).state_dict()
    path = tmp_path / "epoch=3.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3,
                "global_step": 120}, path)
    loaded = load_weights(path, load_torchvision_model("mobilenet_v2"))
    assert loaded.name == "resnet18" and loaded.module.fc.out_features == 5
    assert "ignored: epoch, global_step" in loaded.weights_label or "ignored: global_step, epoch" in loaded.weights_label


def test_weights_full_of_nan_load_with_a_warning(tmp_path):
    """A diverged checkpoint loads (it fits), but says that its outputs are meaningless."""
    from cnnviewer.engine.models.loading import load_weights

    torch.manual_seed(0)
    net = torchvision.models.squeezenet1_1(num_classes=4)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["classifier.1.weight"].fill_(float("nan"))
    state["features.0.bias"][0] = float("inf")
    torch.save(state, tmp_path / "diverged.pth")
    model = load_weights(tmp_path / "diverged.pth", None)
    assert model.name == "squeezenet1_1"
    assert "2 tensors hold NaN or inf" in model.weights_label and "features.0.bias" in model.weights_label
    torch.save(net.state_dict() | {"classifier.1.weight": torch.zeros(4, 512, 1, 1)}, tmp_path / "fine.pth")
    assert "NaN" not in load_weights(tmp_path / "fine.pth", None).weights_label
