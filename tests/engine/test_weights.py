"""Reading weights files safely, fitting them, and naming their architecture."""

from __future__ import annotations

import os
import pickle
import time
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from cnnviewer.engine.errors import UntrustedPickleError, WeightsError
from cnnviewer.engine.models.fitting import fit_state_dict, infer_architecture
from cnnviewer.engine.models.weight_files import (
    WRAPPER_KEYS,
    normalize_state_dict,
    read_weights,
)
from cnnviewer.engine.types import WEIGHT_SUFFIXES


class TinyNet(nn.Module):
    """Dotted names (features.0) plus a BatchNorm for buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class Evil:
    """Pickles to a call of os.system that would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_suffixes_are_lowercase_and_complete():
    assert WEIGHT_SUFFIXES == {".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".pt2", ".tar", ".onnx"}


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt", ".tar"])
def test_plain_state_dict(tmp_path, net, suffix):
    path = tmp_path / f"w{suffix}"
    torch.save(net.state_dict(), path)
    w = read_weights(path)
    assert (w.kind, w.module, w.ignored_keys) == ("state_dict", None, ())
    assert _same(w.state_dict, net.state_dict())


def test_legacy_torch_save_format(tmp_path, net):
    path = tmp_path / "old.pth"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    assert _same(read_weights(path).state_dict, net.state_dict())


@pytest.mark.parametrize("key", WRAPPER_KEYS)
def test_checkpoint_wrappers(tmp_path, net, key):
    path = tmp_path / "ckpt.ckpt"
    torch.save({key: net.state_dict(), "epoch": 3, "optimizer": {"state": {}}, "lr": 0.1}, path)
    w = read_weights(path)
    assert _same(w.state_dict, net.state_dict())
    assert set(w.ignored_keys) == {"epoch", "optimizer", "lr"}


def test_wrapper_prefers_plain_weights_and_keeps_tensor_extras_out(tmp_path, net):
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict_ema": ema, "state_dict": net.state_dict(),
                "best_acc": torch.tensor(0.9)}, path)
    w = read_weights(path)
    assert _same(w.state_dict, net.state_dict())
    assert set(w.ignored_keys) == {"state_dict_ema", "best_acc"}


def test_unknown_wrapper_key_and_non_tensor_entries(tmp_path, net):
    path = tmp_path / "ckpt.pth"
    torch.save({"my_net": {**net.state_dict(), "version": 2}, "epoch": 1}, path)
    w = read_weights(path)
    assert _same(w.state_dict, net.state_dict())
    assert set(w.ignored_keys) == {"epoch", "version"}


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_prefixes_are_stripped(tmp_path, net, prefix):
    path = tmp_path / "w.pth"
    torch.save({"model": {prefix + k: v for k, v in net.state_dict().items()}}, path)
    assert _same(read_weights(path).state_dict, net.state_dict())


def test_prefix_kept_unless_all_keys_share_it():
    sd = {"module.weight": torch.zeros(1), "head.weight": torch.zeros(1)}
    assert set(normalize_state_dict(sd)) == {"module.weight", "head.weight"}


def test_safetensors(tmp_path, net):
    path = tmp_path / "w.safetensors"
    save_file({"module." + k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    w = read_weights(path)
    assert w.kind == "state_dict" and _same(w.state_dict, net.state_dict())


def test_torchscript_scripted_and_traced(tmp_path, net):
    x = torch.randn(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # torch.jit is deprecated
        torch.jit.save(torch.jit.script(net), tmp_path / "s.pt")
        torch.jit.save(torch.jit.trace(net, x), tmp_path / "t.pth")
    for name in ("s.pt", "t.pth"):
        w = read_weights(tmp_path / name)
        assert w.kind == "torchscript" and w.state_dict is None
        assert "features.0" in dict(w.module.named_modules())
        torch.testing.assert_close(w.module(x), net(x))


def test_torch_export_keeps_dotted_names(tmp_path, net):
    x = torch.randn(1, 3, 8, 8)
    torch.export.save(torch.export.export(net, (x,)), tmp_path / "net.pt2")
    w = read_weights(tmp_path / "net.pt2")
    assert w.kind == "exported"
    assert {"features.0", "features.1", "fc"} <= set(dict(w.module.named_modules()))
    torch.testing.assert_close(w.module(x), net(x))


def test_export_archive_with_a_hostile_pickle_needs_trust(tmp_path, net):
    import io
    import json
    import zipfile

    x = torch.randn(1, 3, 8, 8)
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(net, (x,)), good)
    marker = tmp_path / "pwned"
    payload = io.BytesIO()
    torch.save(Evil(marker), payload)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(evil, "w") as out:
        config_name = next(n for n in source.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(source.read(config_name))
        first = next(iter(config["config"]))
        config["config"][first]["use_pickle"] = True            # the archive asks torch to unpickle it
        target = config["config"][first]["path_name"]
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == config_name:
                data = json.dumps(config).encode()
            elif info.filename.endswith("/" + target) or info.filename.endswith(target):
                data = payload.getvalue()
            out.writestr(info.filename, data)
    with pytest.raises(UntrustedPickleError, match="runs code"):
        read_weights(evil)
    assert not marker.exists()


def test_full_pickle_needs_trust(tmp_path, net):
    path = tmp_path / "full.pth"
    torch.save(net, path)
    with pytest.raises(UntrustedPickleError, match=r"full\.pth is a full pickled model \(it rebuilds .*TinyNet"):
        read_weights(path)
    w = read_weights(path, trust=True)
    assert w.kind == "module" and isinstance(w.module, TinyNet)
    assert _same(w.module.state_dict(), net.state_dict())


def test_trusted_checkpoint_holding_a_module(tmp_path, net):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": net, "epoch": 5}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UntrustedPickleError):
        read_weights(path)
    w = read_weights(path, trust=True)
    assert w.kind == "module" and w.ignored_keys == ("epoch",)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump", "pickle.dump protocol 2"])
def test_malicious_pickle_does_not_run(tmp_path, how):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    if how == "torch.save":
        torch.save({"state_dict": Evil(marker)}, path)
    else:
        with path.open("wb") as f:
            pickle.dump(Evil(marker), f, protocol=2 if how.endswith("2") else None)
    with pytest.raises(UntrustedPickleError) as info:
        read_weights(path)
    assert not marker.exists()
    assert "\n" not in str(info.value)
    assert "calls posix.system" in str(info.value) or "calls os.system" in str(info.value)   # named, not "a model"


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match=r"nope\.pth: no such file"):
        read_weights(tmp_path / "nope.pth")


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file(tmp_path, net, legacy):
    full = tmp_path / "full.pth"
    torch.save(net.state_dict(), full, _use_new_zipfile_serialization=not legacy)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"cut\.pth is corrupt or truncated"):
        read_weights(cut)


def test_truncated_safetensors(tmp_path, net):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        read_weights(path)


@pytest.mark.parametrize("name, content", [
    ("notes.pth", b"hello, these are not weights\n"),
    ("image.pth", b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
    ("fake.safetensors", b"just text, no header at all"),
])
def test_not_a_weights_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(WeightsError, match=rf"{name} is not a"):
        read_weights(tmp_path / name)


def test_pickle_of_plain_data(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="not a weights file .*list"):
        read_weights(tmp_path / "list.pt")
    with (tmp_path / "raw.pkl").open("wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(WeightsError, match="not a weights file") as info:
        read_weights(tmp_path / "raw.pkl")
    assert not isinstance(info.value, UntrustedPickleError)


@pytest.mark.parametrize("obj", [{}, {"state_dict": {}, "epoch": 1}])
def test_empty_state_dict(tmp_path, obj):
    torch.save(obj, tmp_path / "e.pth")
    with pytest.raises(WeightsError, match="empty state dict"):
        read_weights(tmp_path / "e.pth")


def test_empty_file(tmp_path):
    (tmp_path / "zero.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        read_weights(tmp_path / "zero.pt")


# --------------------------------------------------------------------------- fitting

def test_fit_loads_weights(net):
    torch.manual_seed(1)
    other = TinyNet()
    fit_state_dict(other, net.state_dict())
    assert _same(other.state_dict(), net.state_dict())


def test_fit_tolerates_missing_num_batches_tracked(net):
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    other = TinyNet()
    fit_state_dict(other, sd)
    torch.testing.assert_close(other.features[1].running_var, net.features[1].running_var)


def test_wrong_architecture_leaves_model_untouched():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    before = _snapshot(model)
    sd = dict(model.state_dict())
    sd["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    del sd["fc.weight"], sd["fc.bias"]
    sd["head.weight"] = torch.zeros(3)
    sd["layer1.0.conv1.weight"] = torch.ones(64, 64, 3, 3)   # fits: must not be copied
    with pytest.raises(WeightsError) as info:
        fit_state_dict(model, sd, source="weights.pth", model_name="resnet18")
    assert str(info.value) == (
        "weights.pth does not fit resnet18: 2 missing (fc.weight, fc.bias), "
        "1 unexpected (head.weight), 1 wrong shape (conv1.weight: file [64, 1, 7, 7] vs model [64, 3, 7, 7])")
    assert _same(model.state_dict(), before)


def test_fit_message_lists_three_names_and_counts(net):
    extra = {f"x{i}": torch.zeros(1) for i in range(5)}
    with pytest.raises(WeightsError) as info:
        fit_state_dict(net, extra, source="w.pt")
    assert str(info.value) == ("w.pt does not fit TinyNet: 8 missing (features.0.weight, "
                               "features.0.bias, features.1.weight), 5 unexpected (x0, x1, x2)")


# --------------------------------------------------------------------------- inference

def _random_state_dict(name: str, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None, **kwargs).state_dict()


@pytest.mark.parametrize("name, kwargs, expected", [
    ("resnet18", {"num_classes": 10}, ("resnet18", 10, True)),
    ("mobilenet_v2", {}, ("mobilenet_v2", 1000, False)),
    ("squeezenet1_1", {"num_classes": 7}, ("squeezenet1_1", 7, True)),
    ("densenet121", {"num_classes": 2}, ("densenet121", 2, True)),
    ("efficientnet_b0", {}, ("efficientnet_b0", 1000, False)),
    ("shufflenet_v2_x0_5", {"num_classes": 3}, ("shufflenet_v2_x0_5", 3, True)),
    ("regnet_x_400mf", {"num_classes": 5}, ("regnet_x_400mf", 5, True)),
])
def test_infer_architecture(name, kwargs, expected):
    match = infer_architecture(normalize_state_dict(_random_state_dict(name, **kwargs)))
    assert (match.name, match.num_classes, match.adapted) == expected
    assert match.kwargs["num_classes"] == expected[1]


def test_infer_googlenet_without_aux_heads():
    sd = _random_state_dict("googlenet", aux_logits=False, init_weights=False, num_classes=4)
    match = infer_architecture(sd)
    assert (match.name, match.num_classes, match.kwargs) == (
        "googlenet", 4, {"num_classes": 4, "aux_logits": False})


def test_infer_tolerates_missing_num_batches_tracked():
    sd = {k: v for k, v in _random_state_dict("resnet18").items() if "num_batches" not in k}
    assert infer_architecture(sd).name == "resnet18"


def test_infer_unknown_names_closest():
    sd = dict(_random_state_dict("resnet18", num_classes=10))
    del sd["fc.bias"]
    sd["head.weight"] = torch.zeros(1)
    sd["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    with pytest.raises(WeightsError, match=r"no torchvision architecture matches w\.pth "
                                           r"\(\d+ tensors\); closest: resnet18 \(3 keys differ\)"):
        infer_architecture(sd, source="w.pth")


def test_infer_second_call_is_cached():
    sd = _random_state_dict("resnet18")
    infer_architecture(sd)
    start = time.perf_counter()
    infer_architecture(sd)
    assert time.perf_counter() - start < 0.5


REWRITE_WHILE_LOADING = r"""
import sys, threading, torch
from safetensors.torch import save_file
from cnnviewer.engine.errors import WeightsError
from cnnviewer.engine.models.weight_files import read_weights
path = sys.argv[1]
save_file({f"t{i}": torch.randn(512, 1024) for i in range(16)}, path)   # 32 MiB
data = open(path, "rb").read()
stop = threading.Event()
def rewrite():   # what a training script does when it saves over its checkpoint
    while not stop.is_set():
        with open(path, "r+b") as f:
            f.truncate(4096)
        with open(path, "r+b") as f:
            f.write(data)
thread = threading.Thread(target=rewrite)
thread.start()
messages = set()
for _ in range(150):
    try:
        read_weights(path)
    except WeightsError as error:
        messages.add(str(error).split(" (")[0])
stop.set()
thread.join()
print(sorted(messages))
"""


def test_safetensors_rewritten_while_loading_is_an_error_not_a_crash(tmp_path):
    """A memory-mapped read died with SIGBUS here; the file is now read into memory first."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", REWRITE_WHILE_LOADING, str(tmp_path / "w.safetensors")],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "w.safetensors" in result.stdout or result.stdout.strip() == "[]"
