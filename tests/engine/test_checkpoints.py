"""A training run's checkpoint folder: order, Follow's completeness check, the fitted series and drift.

Real files: the real MobileNetV2's parameters moved progressively (W_k = W_0 + k·ε·noise) and saved
with torch.save / safetensors under the names training frameworks use.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch

from cnnviewer.engine.errors import Cancelled, WeightsError
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models.checkpoint_drift import DriftCache, series_drift
from cnnviewer.engine.models.checkpoint_names import safetensors_header
from cnnviewer.engine.models.checkpoints import (
    CheckpointSeries,
    complete,
    describe_entry,
    list_checkpoints,
    new_entries,
    order_from_name,
    readable,
)
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks

EPSILON = 0.01


@pytest.fixture(scope="module")
def real(one_torch_thread):
    """The real MobileNetV2, its state dict and a fixed noise per parameter (buffers stay)."""
    model = load_model("mobilenet_v2")
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    params = dict(model.module.named_parameters())
    generator = torch.Generator().manual_seed(0)
    noise = {k: torch.randn(v.shape, generator=generator) * float(v.std()) if k in params and v.numel() > 1
             else torch.zeros_like(v) if k in params else None for k, v in state.items()}
    return model, state, noise


def moved(real, k: int) -> dict[str, torch.Tensor]:
    _model, state, noise = real
    return {key: value + k * EPSILON * noise[key] if noise[key] is not None else value for key, value in state.items()}


@pytest.mark.parametrize(("name", "epoch", "step"), [
    ("epoch=3-step=1200.ckpt", 3, 1200), ("epoch_003.pth", 3, None), ("ckpt_e12.pt", 12, None),
    ("step1000.pt", None, 1000), ("checkpoint-1500", None, 1500), ("model_0005.pth", None, 5),
    ("42.pt", None, 42), ("iter_250.pth", None, 250), ("last.ckpt", None, None),
    # run names that carry hyper-parameters: a learning rate or weight decay is never an epoch
    ("lr1e-4_epoch2.pt", 2, None), ("lr1e-4_epoch10.pt", 10, None), ("wd5e-4-epoch=7.ckpt", 7, None),
    ("resnet18_lr3e-4_bs64_e12.pth", 12, None), ("lr1e-3_wd1e-4_bs32_ep3.pt", 3, None),
    ("lr0.01_bs128_step500.pt", None, 500), ("model_v2_epoch5.pt", 5, None)])
def test_order_from_the_name(name, epoch, step):
    assert order_from_name(name)[:2] == (epoch, step)


def test_training_order_from_names_then_file_keys_then_mtime(real, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for k in (3, 0, 2, 1):   # written out of order, with mtimes shuffled against the epochs
        torch.save(moved(real, k), run / f"epoch_{k:03d}.pth")
        os.utime(run / f"epoch_{k:03d}.pth", (1000 + 10 * (5 - k), 1000 + 10 * (5 - k)))
    for junk in (".epoch_009.pth", "epoch_009.pth.tmp", "epoch_010.partial", "epoch_011.pt~", "notes.txt"):
        (run / junk).write_bytes(b"x")   # a writer's temporary files and other files: never listed
    listed = list_checkpoints(run)
    assert [Path(c.path).name for c in listed] == [f"epoch_{k:03d}.pth" for k in range(4)]
    assert [c.label for c in listed] == [f"epoch {k}" for k in range(4)]

    lightning = tmp_path / "lightning"   # no order in the names: the checkpoint dicts' own keys
    lightning.mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in moved(real, 2).items()}, "epoch": 3, "global_step": 1200},
               lightning / "last.ckpt")
    torch.save({"state_dict": moved(real, 1), "epoch": 1, "global_step": 400}, lightning / "best.ckpt")
    os.utime(lightning / "best.ckpt", (5000, 5000))   # newer than last.ckpt: the keys win over mtime
    listed = list_checkpoints(lightning)
    assert [(Path(c.path).name, c.epoch, c.step, c.label) for c in listed] == [
        ("best.ckpt", 1, 400, "epoch 1 · step 400"), ("last.ckpt", 3, 1200, "epoch 3 · step 1200")]

    plain = tmp_path / "plain"   # nothing says the order: modification time, ties by name
    plain.mkdir()
    for name, stamp in (("b.pt", 30), ("c.pt", 10), ("a.pt", 20)):
        torch.save({"fc.weight": torch.ones(2, 2)}, plain / name)
        os.utime(plain / name, (stamp, stamp))
    assert [Path(c.path).name for c in list_checkpoints(plain)] == ["c.pt", "a.pt", "b.pt"]

    with pytest.raises(WeightsError, match="not a folder"):
        list_checkpoints(tmp_path / "missing")


def test_series_drift_matches_the_hand_computation(real, tmp_path):
    model, state, noise = real
    names = ["epoch=0-step=0.ckpt", "epoch=1-step=500.ckpt", "epoch=2-step=1000.ckpt", "epoch=3-step=1500.ckpt"]
    for k, name in enumerate(names):
        torch.save({"state_dict": moved(real, k), "epoch": k, "global_step": 500 * k, "optimizer": {}}, tmp_path / name)
    (tmp_path / "epoch=4-step=2000.ckpt").write_bytes(b"PK\x03\x04 not really a zip")   # corrupt: listed, skipped
    listed = list_checkpoints(tmp_path)
    assert [c.step for c in listed] == [0, 500, 1000, 1500, 2000]
    series = CheckpointSeries(tmp_path, listed, model)
    image = sample_image("chelsea")
    drift = list(series_drift(series, image, "features.3"))
    assert [d.error is None for d in drift] == [True, True, True, True, False]
    assert "epoch=4-step=2000.ckpt" in drift[4].error and "\n" not in drift[4].error
    params = [k for k, _ in model.module.named_parameters()]
    base = torch.cat([state[k].flatten() for k in params])
    step = torch.cat([(EPSILON * noise[k]).flatten() for k in params])
    for k in range(4):   # ||W_k - W_0|| / ||W_0|| = k·ε·||noise|| / ||W_0||
        assert drift[k].weights == pytest.approx(k * float(step.norm() / base.norm()), rel=1e-4, abs=1e-7)
    assert [d.weights_previous for d in drift[1:4]] == pytest.approx([float(step.norm() / base.norm())] * 3,
                                                                      rel=1e-3)
    layer = dict(drift[2].layers)["features.3.conv.1.0"]   # one layer by hand too
    own = [k for k in params if k.startswith("features.3.conv.1.0.")]
    hand = torch.cat([(2 * EPSILON * noise[k]).flatten() for k in own]).norm() / torch.cat(
        [state[k].flatten() for k in own]).norm()
    assert layer == pytest.approx(float(hand), rel=1e-4)
    from cnnviewer.engine.comparison.compare import _weight_drift   # every layer as Compare measures it
    assert dict(drift[3].layers) == pytest.approx(_weight_drift(series.model(0), series.model(3)), rel=1e-4, abs=1e-7)
    activations = [d.activation for d in drift[:4]]
    assert activations[0] == 0.0 and all(a < b for a, b in zip(activations, activations[1:]))
    assert drift[0].logits == 0.0 and drift[3].logits > drift[1].logits > 0
    assert drift[0].top1 == "Egyptian cat" and 0.5 < drift[0].probability < 1
    for k in range(4):   # the series' models are left as loaded: no hooks, eval, no gradients
        fitted = series.model(k)
        assert not has_hooks(fitted.module) and not fitted.module.training
        assert not any(p.requires_grad for p in fitted.module.parameters())
    assert not has_hooks(model.module)


def test_series_reads_each_checkpoint_once_and_keeps_the_last_few(real, tmp_path):
    model = real[0]
    for k in range(6):
        torch.save(moved(real, k), tmp_path / f"step{k * 100}.pt")
    series = CheckpointSeries(tmp_path, list_checkpoints(tmp_path), model, cache_size=4)
    first = series.model(0)
    assert first.name == "mobilenet_v2" and first.weights_label.startswith("step 0: step0.pt")
    assert torch.equal(first.module.features[0][0].weight, moved(real, 0)["features.0.0.weight"])
    third = series.model(3)
    assert torch.equal(third.module.features[0][0].weight, moved(real, 3)["features.0.0.weight"])
    assert third.token != first.token and third.module is not first.module   # caches never mix two checkpoints
    reads = series.reads
    assert series.model(3) is third and series.model(0) is first and series.reads == reads   # cached
    for k in (1, 2):
        series.model(k)
    fourth = series.model(4)         # the cache is full: 3 (the oldest) is evicted, its module filled with step 400
    assert series.reads == reads + 3 and fourth.module is third.module and fourth.token != third.token
    assert torch.equal(fourth.module.features[0][0].weight, moved(real, 4)["features.0.0.weight"])
    fifth = series.model(5)          # 0 is evicted next, but the first checkpoint's module is never overwritten
    assert fifth.module is not first.module and series.reads == reads + 4
    assert torch.equal(first.module.features[0][0].weight, moved(real, 0)["features.0.0.weight"])
    assert torch.equal(fifth.module.features[0][0].weight, moved(real, 5)["features.0.0.weight"])
    series.model(3)                 # evicted by four newer ones: read again
    assert series.reads == reads + 5
    assert series.model(0) is first and series.reads == reads + 5   # the first decides the architecture: kept

    assert series.rewritten() == []
    torch.save(moved(real, 2), tmp_path / "step0.pt")   # the first file written again (a run restarted)
    torch.save(moved(real, 1), tmp_path / "step500.pt")
    os.utime(tmp_path / "step500.pt", (9999, 9999))
    again = series.rewritten()
    assert [c.path for c, _entry, _weights in again] == [str(tmp_path / "step0.pt"), str(tmp_path / "step500.pt")]
    for _old, entry, weights in again:
        series.replace(describe_entry(entry, weights))
    assert [c.step for c in series.checkpoints] == [0, 100, 200, 300, 400, 500] and series.rewritten() == []
    assert torch.equal(series.model(0).module.features[0][0].weight, moved(real, 2)["features.0.0.weight"])
    assert torch.equal(series.model(5).module.features[0][0].weight, moved(real, 1)["features.0.0.weight"])
    assert torch.equal(first.module.features[0][0].weight, moved(real, 0)["features.0.0.weight"])   # untouched


def test_hugging_face_folders_and_a_file_written_bit_by_bit(real, tmp_path):
    from safetensors.torch import save_file
    model = real[0]
    for step in (1500, 500):
        (tmp_path / f"checkpoint-{step}").mkdir()
        save_file({k: v.contiguous() for k, v in moved(real, step // 500).items()},
                  tmp_path / f"checkpoint-{step}" / "model.safetensors")
        torch.save({}, tmp_path / f"checkpoint-{step}" / "optimizer.pt")   # beside it, as the Trainer writes
    listed = list_checkpoints(tmp_path)
    assert [(c.step, c.name) for c in listed] == [(500, "checkpoint-500/model.safetensors"),
                                                  (1500, "checkpoint-1500/model.safetensors")]
    series = CheckpointSeries(tmp_path, listed, model)
    assert torch.equal(series.model(1).module.classifier[1].bias, moved(real, 3)["classifier.1.bias"])

    whole = tmp_path / "whole.pt"
    torch.save(moved(real, 1), whole)
    data = whole.read_bytes()
    partial = tmp_path / "epoch_007.pth"
    partial.write_bytes(data[: len(data) // 2])           # a torch.save half way through
    ready, stamp = complete(partial, None)
    assert not ready
    ready, stamp = complete(partial, stamp)               # stable, but it does not read: not yet
    assert not ready and not readable(partial)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(partial)
    with partial.open("ab") as file:
        file.write(data[len(data) // 2:])
    ready, stamp = complete(partial, stamp)               # grew since the last poll: not yet
    assert not ready
    ready, _ = complete(partial, stamp)                   # the same size and mtime twice, and it reads
    assert ready and readable(partial)
    assert complete(tmp_path / "gone.pt", stamp) == (False, None)


def test_lr_in_names_keeps_the_epoch_order(tmp_path):
    for epoch in (2, 10, 1):
        torch.save({"w": torch.zeros(1)}, tmp_path / f"lr1e-4_wd5e-4_epoch{epoch}.pt")
    assert [c.label for c in list_checkpoints(tmp_path)] == ["epoch 1", "epoch 2", "epoch 10"]


def test_the_checkpoint_on_screen_is_never_refilled_by_later_reads(real, tmp_path):
    model = real[0]
    for k in range(6):
        torch.save(moved(real, k), tmp_path / f"epoch_{k}.pt")
    series = CheckpointSeries(tmp_path, list_checkpoints(tmp_path), model, cache_size=2)
    shown = series.model(1)                       # every panel shows epoch 1
    for k in (2, 3, 4, 5):                        # superseded slider moves still ran on the job thread
        series.model(k, shown=shown.weights_path)
    assert torch.equal(shown.module.features[0][0].weight, moved(real, 1)["features.0.0.weight"])
    assert series.model(1) is shown               # still cached: the strip may go back to it for free
    reads = series.reads
    stop = __import__("threading").Event()
    stop.set()
    with pytest.raises(Cancelled):                # a superseded move stops before reading
        series.model(3, shown=shown.weights_path, cancel=stop)
    assert series.reads == reads


def test_exports_are_not_checkpoints_and_a_script_never_decides_the_architecture(real, tmp_path):
    model = real[0]
    (tmp_path / "export.onnx").write_bytes(b"an onnx export beside the checkpoints")
    (tmp_path / "model.pt2").write_bytes(b"a torch.export archive")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "epoch_0.pt")   # TorchScript, first in order
    for k in (1, 2):
        torch.save(moved(real, k), tmp_path / f"epoch_{k}.pt")
    listed = list_checkpoints(tmp_path)
    assert [Path(c.path).name for c in listed] == ["epoch_0.pt", "epoch_1.pt", "epoch_2.pt"]
    series = CheckpointSeries(tmp_path, listed, model)
    assert series.architecture().weights_path == str(tmp_path / "epoch_1.pt")
    assert torch.equal(series.model(2).module.features[0][0].weight, moved(real, 2)["features.0.0.weight"])
    with pytest.raises(WeightsError, match="epoch_0.pt holds a whole model"):
        series.model(0)


def test_a_huge_safetensors_header_is_not_read(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes((2 ** 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="header"):
        safetensors_header(path)
    assert not readable(path)


def test_deleted_checkpoints_and_a_deleted_folder(real, tmp_path):
    for k in range(3):
        torch.save({"w": torch.full((2,), float(k))}, tmp_path / f"epoch_{k}.pt")
    series = CheckpointSeries(tmp_path, list_checkpoints(tmp_path))
    (tmp_path / "epoch_0.pt").unlink()           # Lightning's save_top_k deletes old ones
    (tmp_path / "epoch_1.pt").unlink()
    assert series.vanished(keep=str(tmp_path / "epoch_1.pt")) == [str(tmp_path / "epoch_0.pt")]
    assert [c.label for c in series.checkpoints] == ["epoch 1", "epoch 2"]   # the one on screen stays
    for path in tmp_path.iterdir():
        path.unlink()
    tmp_path.rmdir()
    with pytest.raises(WeightsError, match="the folder is gone"):
        new_entries(tmp_path, set())


def test_drift_is_kept_per_checkpoint_so_a_new_one_costs_one_read(real, tmp_path):
    model = real[0]
    for k in range(3):
        torch.save(moved(real, k), tmp_path / f"epoch_{k}.pt")
    series = CheckpointSeries(tmp_path, list_checkpoints(tmp_path), model)
    image, cache = sample_image("chelsea"), DriftCache()
    list(series_drift(series, image, "features.3", cache=cache))
    assert cache.reads == 3
    torch.save(moved(real, 3), tmp_path / "epoch_3.pt")      # Follow: a new checkpoint
    series.add(describe_entry(tmp_path / "epoch_3.pt", tmp_path / "epoch_3.pt"))
    cached = list(series_drift(series, image, "features.3", cache=cache))
    assert cache.reads == 4                                   # only the new one was read and run
    fresh = list(series_drift(series, image, "features.3"))   # the same numbers as a pass from scratch
    for a, b in zip(cached, fresh):
        assert a.top1 == b.top1 and (a.weights_previous is None) == (b.weights_previous is None)
        assert (a.weights, a.weights_previous or 0.0, a.activation, a.logits, a.probability) == pytest.approx(
            (b.weights, b.weights_previous or 0.0, b.activation, b.logits, b.probability), rel=1e-5, abs=1e-7)
        assert dict(a.layers) == pytest.approx(dict(b.layers), rel=1e-5, abs=1e-7)
    list(series_drift(series, image, "features.5", cache=cache))   # another layer: every forward again
    assert cache.reads == 8
