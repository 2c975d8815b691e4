"""The dataset index (issue 12, engine first): top-k per unit equals a brute-force loop, neighbours,
the on-disk format, broken files skipped with reasons, the model left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from cnnviewer.engine.dataset.build import build_index
from cnnviewer.engine.dataset.index import (
    DatasetIndex,
    default_layers,
    folder_images,
)
from cnnviewer.engine.dataset.names import LOGITS
from cnnviewer.engine.media.images import load_image
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """skimage photos, crops, flips, colour shifts, rotations and several sizes, plus broken files."""
    root = tmp_path_factory.mktemp("photos")
    (root / "more").mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        photo = Image.fromarray(getattr(data, name)())
        photo.save(root / f"{name}.jpg", quality=92)
        photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "more" / f"{name}_flip.png")
        width, height = photo.size
        photo.crop((width // 6, height // 6, width * 5 // 6, height * 5 // 6)).resize((300, 240)).save(
            root / "more" / f"{name}_crop.jpg")
    shifted = np.asarray(Image.open(root / "coffee.jpg")).astype(int)
    Image.fromarray(np.clip(shifted * [1.2, 0.9, 0.8], 0, 255).astype(np.uint8)).save(root / "coffee_warm.png")
    Image.open(root / "rocket.jpg").rotate(20, expand=True).save(root / "rocket_turned.png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not a photo")
    whole = (root / "chelsea.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    return root


@pytest.fixture(scope="module")
def indexed(photo_folder, tmp_path_factory):
    model = load_model("mobilenet_v2")
    layers = ["features.3", "features.10", "features.18", "classifier.0", LOGITS]
    index = build_index(photo_folder, model, tmp_path_factory.mktemp("index"), layers=layers, batch_size=4)
    return model, index


def brute_force(model, path: Path, layer: str) -> torch.Tensor:
    """One image through the model the slow, obvious way: the layer's full output."""
    captured = {}
    module = dict(model.module.named_modules())[layer] if layer != LOGITS else None
    handle = module.register_forward_hook(lambda _m, _i, out: captured.setdefault("out", out)) if module else None
    try:
        with torch.no_grad():
            tensor = prepare_input(load_image(path), model.preprocess, model.device).tensor
            logits = model.module(tensor)
    finally:
        if handle is not None:
            handle.remove()
    return (captured["out"] if module else logits)[0]


@pytest.mark.parametrize("layer, channel", [("features.3", 7), ("features.10", 40), ("features.18", 1000),
                                            (LOGITS, 285)])
def test_top_k_equals_a_brute_force_loop(indexed, photo_folder, layer, channel):
    model, index = indexed
    readable = [p for p in folder_images(photo_folder) if p.name not in ("empty.jpg", "notes.jpg", "truncated.jpg")]
    scores = []
    for path in readable:
        output = brute_force(model, path, layer)
        values = output[channel].flatten() if output.dim() == 3 else output[channel].reshape(1)
        best = int(values.argmax())
        width = output.shape[-1] if output.dim() == 3 else 1
        scores.append((float(values[best]), path, divmod(best, width)))
    expected = sorted(scores, key=lambda s: -s[0])[:5]
    found = index.top(layer, channel, 5)
    assert [hit.path for hit in found] == [path for _, path, _ in expected]
    assert [hit.value for hit in found] == pytest.approx([value for value, _, _ in expected], rel=1e-4, abs=1e-5)
    assert [hit.position for hit in found] == [position for _, _, position in expected]


def test_broken_files_are_skipped_with_reasons_and_the_format_is_open(indexed):
    model, index = indexed
    manifest = json.loads((index.directory / "manifest.json").read_text())
    assert {row["path"] for row in manifest["skipped"]} == {"empty.jpg", "notes.jpg", "truncated.jpg"}
    assert all(row["reason"] for row in manifest["skipped"])
    assert len(manifest["images"]) == 14 and manifest["model"] == "mobilenet_v2"
    assert manifest["shapes"]["features.10"] == [64, 14, 14] and len(manifest["weights_sha256"]) == 64
    maxima = np.load(index.directory / "features.10.max.npy", mmap_mode="r")   # plain numpy, memory-mapped
    assert isinstance(maxima, np.memmap) and maxima.shape == (17, 64) and maxima.dtype == np.float32
    np.testing.assert_array_equal(np.load(index.directory / "features.10.max_by_channel.npy"), maxima.T)
    assert not list(index.directory.glob("*.pkl")) and not has_hooks(model.module)
    assert not any(p.requires_grad for p in model.module.parameters())
    reopened = DatasetIndex(index.directory)
    assert reopened.top("features.10", 3, 2) == index.top("features.10", 3, 2)


def test_neighbours_find_the_flipped_copy_first(indexed, photo_folder):
    _model, index = indexed
    rows = {row["path"]: row["row"] for row in index.manifest["images"]}
    for name in ("astronaut", "rocket", "chelsea"):
        query = index.array("classifier.0", "mean")[rows[f"{name}.jpg"]]
        found = [path.relative_to(photo_folder).as_posix() for path, _ in index.neighbours(query, "classifier.0", 3)]
        assert found[0] == f"{name}.jpg" and found[1] == f"more/{name}_flip.png"


def test_default_layers_are_the_top_level_blocks_and_the_logits():
    model = load_model("mobilenet_v2")
    layers = default_layers(model)
    assert layers[:2] == ["features.0", "features.1"] and "features.18" in layers and layers[-1] == LOGITS


def count_reads(monkeypatch) -> list[str]:
    """The names of the files the index decodes from now on (in-process decoding, workers=0)."""
    import cnnviewer.engine.dataset.extract as extract_module
    read: list[str] = []
    original = extract_module._Images.__getitem__

    def counting(self, index):
        read.append(self.files[index].name)
        return original(self, index)

    monkeypatch.setattr(extract_module._Images, "__getitem__", counting)
    return read


def test_reindexing_reads_only_new_and_changed_files_and_equals_a_fresh_index(photo_folder, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "photos"
    shutil.copytree(photo_folder, folder)
    model = load_model("mobilenet_v2")
    layers = ["features.10", LOGITS]
    build_index(folder, model, tmp_path / "index", layers=layers, batch_size=4)
    Image.fromarray(data.astronaut()[::2, ::2]).save(folder / "astronaut_small.png")       # added
    Image.fromarray(data.coffee()[:, ::-1]).save(folder / "coffee.jpg")                      # changed
    (folder / "more" / "rocket_crop.jpg").unlink()                                           # deleted
    read = count_reads(monkeypatch)
    updated = build_index(folder, model, tmp_path / "index", layers=layers, batch_size=4)
    monkeypatch.undo()
    assert sorted(read) == ["astronaut_small.png", "coffee.jpg"]                 # not the broken ones either
    assert updated.manifest["reused"] == 12 and len(updated.manifest["skipped"]) == 3   # 14 - deleted - changed
    fresh = build_index(folder, model, tmp_path / "fresh", layers=layers, batch_size=4)
    for layer in layers:
        for kind in ("max", "pos", "mean"):
            np.testing.assert_allclose(updated.array(layer, kind), fresh.array(layer, kind), rtol=1e-5, atol=1e-5)
    assert [row["path"] for row in updated.manifest["images"]] == [row["path"] for row in fresh.manifest["images"]]
    assert updated.top("features.10", 40, 5) == fresh.top("features.10", 40, 5)


def test_index_top_and_neighbours_commands(photo_folder, tmp_path, capsys, monkeypatch):
    """The command line, in-process: index (summary, skipped files), top --json, neighbours --json,
    and one-line errors with exit 2."""
    from cnnviewer.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    assert main(["index", str(photo_folder), "--layers", "features.10", "classifier.0", LOGITS]) == 0
    out, err = capsys.readouterr()
    assert "14 images indexed (17 read, 0 unchanged), 3 skipped" in out and err.count("skipped:") == 3
    assert main(["index", str(photo_folder)]) == 0                    # again: up to date, no old statistics
    again = capsys.readouterr().out
    assert "up to date, nothing read again (14 images indexed, 3 skipped; 3 layers)" in again
    assert " read," not in again and "images/s" not in again and " s;" not in again
    assert main(["top", str(photo_folder), "--class", "285", "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [Path(hit["path"]).name for hit in hits][0] in ("chelsea.jpg", "chelsea_flip.png", "chelsea_crop.jpg")
    assert main(["top", str(photo_folder), "--layer", "features.10", "--channel", "7", "--neuron", "2", "5", "-k", "3",
                 "--json"]) == 0
    assert [(hit["y"], hit["x"]) for hit in json.loads(capsys.readouterr().out)] == [(2, 5)] * 3
    assert main(["neighbours", str(photo_folder), str(photo_folder / "rocket.jpg"), "-k", "2", "--json"]) == 0
    near = json.loads(capsys.readouterr().out)
    assert [Path(row["path"]).name for row in near] == ["rocket.jpg", "rocket_flip.png"]
    assert near[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert main(["export", "top-patches", str(photo_folder), "--layer", "features.10", "--channel", "40", "-k", "4",
                 "-o", str(tmp_path / "top.png")]) == 0
    sheet = np.asarray(Image.open(tmp_path / "top.png"))
    assert sheet.shape[1] > sheet.shape[0] > 150 and sheet.std() > 10          # pictures beside patches
    assert main(["export", "dataset-map", str(photo_folder), "--side", "400", "-o", str(tmp_path / "map.png")]) == 0
    assert Image.open(tmp_path / "map.png").size == (400, 400)
    capsys.readouterr()
    assert main(["top", str(photo_folder), "--layer", "features.3"]) == 2        # not indexed: one line
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(["top", str(tmp_path / "nowhere"), "--class", "1"]) == 2


@pytest.mark.parametrize("size", [(640, 480), (333, 500), (1200, 300)])
def test_crop_boxes_map_back_onto_the_original_pixels(size):
    """Independent of the formula: a marker drawn in the original is found in the model's crop
    (the real preprocessing), and its crop box maps back onto the marker."""
    from cnnviewer.engine.dataset.patches import crop_to_original
    from cnnviewer.engine.media.images import from_array
    from cnnviewer.engine.models.handle import Preprocess

    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)
    marker = (width // 2 + width // 10, height // 2 - height // 12)      # (x, y) inside the centre crop
    pixels[marker[1] - 3:marker[1] + 3, marker[0] - 3:marker[0] + 3] = 255
    preprocess = Preprocess(resize_size=256, crop_size=224)
    display = prepare_input(from_array(pixels, "marker"), preprocess, torch.device("cpu")).display
    ys, xs = np.nonzero(display[..., 0] > 60)
    box = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)               # (top, left, bottom, right) in the crop
    x0, y0, x1, y1 = crop_to_original(box, (width, height), preprocess)
    scale = max(width, height) / 224
    assert x0 - scale <= marker[0] - 3 and marker[0] + 3 <= x1 + scale
    assert y0 - scale <= marker[1] - 3 and marker[1] + 3 <= y1 + scale
    assert (x1 - x0) < 6 + 4 * scale and (y1 - y0) < 6 + 4 * scale    # and not much bigger than it


def test_top_reports_patch_boxes_from_the_receptive_field(photo_folder, tmp_path, capsys, monkeypatch):
    from cnnviewer.cli import main
    from cnnviewer.engine.dataset.patches import crop_to_original
    from cnnviewer.engine.structure.summary_graph import summarize

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["index", str(photo_folder), "--layers", "features.10", LOGITS]) == 0
    capsys.readouterr()
    assert main(["top", str(photo_folder), "--layer", "features.10", "--channel", "40", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    model = load_model("mobilenet_v2")
    field = summarize(model.module, (224, 224)).fields["features.10"]
    for hit in hits:
        width, height = Image.open(hit["path"]).size
        expected = crop_to_original(field.box(hit["y"], hit["x"]), (width, height), model.preprocess)
        assert hit["box"] == pytest.approx([round(v, 2) for v in expected], abs=0.01)
        assert hit["box"][2] - hit["box"][0] == pytest.approx(field.size[1] * width / (256 * width / min(width, height)),
                                                             rel=0.02)


def test_a_cancelled_build_resumes_where_it_stopped(photo_folder, tmp_path, monkeypatch):
    """Cancel after the first batches: the checkpoint keeps them, the next build reads only the rest
    and the result equals a fresh index, value for value."""
    import threading

    from cnnviewer.engine.dataset.build import RESUME, STAGING, IndexBuild
    from cnnviewer.engine.dataset.partial import CHECKPOINTS, is_partial, open_checkpoint, paused_note
    from cnnviewer.engine.errors import Cancelled

    model = load_model("mobilenet_v2")
    layers = ["features.10", LOGITS]
    cancel = threading.Event()
    first = IndexBuild(photo_folder, model, tmp_path / "index", layers=layers, batch_size=4)
    with pytest.raises(Cancelled):
        first.run(cancel=cancel, progress=lambda done, total: done >= 8 and cancel.set())
    assert (tmp_path / "index" / ".building" / "manifest.json").is_file()
    assert not (tmp_path / "index" / "current").exists()            # no half index is ever opened
    paused = open_checkpoint(tmp_path / "index")                     # but the paused rows can be browsed
    assert paused is not None and paused.directory.name == ".building" and is_partial(paused)
    assert 0 < len(paused.rows) <= 8 and max(paused.rows) < 8
    assert paused_note(paused) == f"paused: 8 of {len(folder_images(photo_folder))} indexed; Resume to finish"
    read = count_reads(monkeypatch)
    second = IndexBuild(photo_folder, model, tmp_path / "index", layers=layers, batch_size=4)
    assert open_checkpoint(tmp_path / "index").directory.name == ".resume"   # planned from: moved, still read
    assert second.done == 8 and not second.run(seconds=0.0)      # a slice: one batch, then back
    while not second.run(seconds=0.0):
        pass
    resumed = second.finish()
    monkeypatch.undo()
    assert sorted(read) == sorted(path.name for path in folder_images(photo_folder)[8:])   # only the rest
    fresh = build_index(photo_folder, model, tmp_path / "fresh", layers=layers, batch_size=4)
    for layer in layers:
        for kind in ("max", "pos", "mean"):
            np.testing.assert_array_equal(resumed.array(layer, kind), fresh.array(layer, kind))
    np.testing.assert_array_equal(resumed.thumbnails(resumed.valid_rows), fresh.thumbnails(fresh.valid_rows))
    assert resumed.manifest["images"] == fresh.manifest["images"] and resumed.skipped == fresh.skipped
    assert not (tmp_path / "index" / ".building").exists() and not (tmp_path / "index" / ".resume").exists()
    assert open_checkpoint(tmp_path / "index") is None and not is_partial(resumed) and paused_note(resumed) == ""
    for channel in (0, 5, 17):           # the paused rows' top images: the finished index's, among those rows
        best = [hit.row for hit in paused.top("features.10", channel, 3)]
        among = sorted(paused.rows, key=lambda row: (-fresh.array("features.10", "max")[row, channel], row))[:3]
        assert best == among
    assert not has_hooks(model.module) and not model.module.training
    assert CHECKPOINTS == (STAGING, RESUME)                           # the folders builder.py writes


def test_torchrun_shards_equal_the_single_process_index(photo_folder, tmp_path):
    """`torchrun --nproc_per_node=2 -m cnnviewer index` on the CPU (gloo): the merged index holds the
    same files and the same values as one process's."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CNNVIEWER_OFFLINE": "1", "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path)}
    common = ["-m", "cnnviewer", "index", str(photo_folder), "--layers", "features.6", "features.14", LOGITS,
              "--batch-size", "3"]
    single = subprocess.run([sys.executable, *common, "-o", str(tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 *common, "-o", str(tmp_path / "two")], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, 9)      # the launcher and both ranks: nothing is left running
        raise
    assert launcher.returncode == 0, err[-2000:]
    assert "2 processes" in out and out.count("images indexed") == 1
    one, two = DatasetIndex(tmp_path / "one"), DatasetIndex(tmp_path / "two")
    assert one.manifest["images"] == two.manifest["images"] and one.manifest["skipped"] == two.manifest["skipped"]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    for layer in one.layers:
        for kind in ("max", "pos", "mean"):
            np.testing.assert_array_equal(one.array(layer, kind), two.array(layer, kind))
    np.testing.assert_array_equal(np.load(one.directory / "thumbs.npy"), np.load(two.directory / "thumbs.npy"))


def test_a_neurons_top_images_equal_a_brute_force_loop(indexed, photo_folder):
    """Ranking by one position a(y, x, c) reads the images again, in slices, and finds what a loop finds."""
    from cnnviewer.engine.dataset.neuron import NeuronScan

    model, index = indexed
    scan = NeuronScan(model, index, "features.10", 40, (3, 9), batch_size=4)
    assert not scan.run(seconds=0.0)                                     # one batch per slice
    while not scan.run(seconds=0.0):
        pass
    readable = [p for p in folder_images(photo_folder) if p.name not in ("empty.jpg", "notes.jpg", "truncated.jpg")]
    expected = sorted(((float(brute_force(model, path, "features.10")[40, 3, 9]), path) for path in readable),
                      key=lambda pair: -pair[0])[:5]
    found = scan.top(5)
    assert [hit.path for hit in found] == [path for _, path in expected]
    assert [hit.value for hit in found] == pytest.approx([value for value, _ in expected], rel=1e-4, abs=1e-5)
    assert all(hit.position == (3, 9) for hit in found) and len(scan.finite_values()) == 14
    assert not has_hooks(model.module) and not model.module.training
    with pytest.raises(Exception, match="outside"):
        NeuronScan(model, index, "features.10", 40, (14, 0))
