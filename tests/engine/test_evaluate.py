"""Evaluate attribution over an indexed folder: the table is the per-image scores averaged, the cache
beside the index is reused, a damaged or forged cache is ignored and written over, a crash while
writing leaves the old file or none, and Cancel keeps nothing.

Real MobileNetV2 weights and real photos (skimage.data); 3 images, 2 methods, 10 steps, deletion and
insertion (ROAD costs ~4x more per map: it is checked once, on one image).
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")   # before the engine reads it

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cnnviewer.engine.attribution import evaluate_cache, faithfulness
from cnnviewer.engine.attribution.evaluate import EvaluationError, evaluate_images
from cnnviewer.engine.attribution.evaluate_cache import evaluate_index
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.dataset.build import build_index
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.media.images import load_image
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.workbench import Workbench

pytestmark = pytest.mark.usefixtures("one_torch_thread")

METHODS = ("saliency", "grad-cam")
METRICS = ("deletion", "insertion")
STEPS = 10


@pytest.fixture(scope="module")
def model():
    found = load_model("mobilenet_v2")
    assert found.trained, "the offline weights pack with MobileNetV2 must be installed"
    return found


@pytest.fixture(scope="module")
def index(model, tmp_path_factory):
    """Three photos and one file that is not an image (skipped by the index)."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((256, 256)).save(folder / f"{name}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return build_index(folder, model, tmp_path_factory.mktemp("index"), layers=["features.18", "logits"],
                       batch_size=4)


class Counted:
    """Counts the calls of the real function it wraps (the model work of an evaluation)."""

    def __init__(self, function) -> None:
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.fixture(scope="module")
def evaluated(model, index):
    """The first evaluation of the folder (computed, then kept beside the index)."""
    state = [(p, p.requires_grad) for p in model.module.parameters()]
    fractions = []
    result = evaluate_index(Workbench(), model, index, methods=METHODS, metrics=METRICS, steps=STEPS,
                            progress=fractions.append)
    assert not has_hooks(model.module) and not model.module.training      # the model is left as found
    assert [(p, p.requires_grad) for p, _ in state] == state
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    return result


def test_the_table_is_the_per_image_scores_averaged(model, index, evaluated):
    assert not evaluated.cached and evaluated.target is None and evaluated.steps == STEPS
    assert [row.method for row in evaluated.methods] == list(METHODS)
    assert sorted(evaluated.images) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    bench = Workbench()
    for i, name in enumerate(evaluated.images):
        image = load_image(index.folder / name)
        top1 = bench.forward(model, image).predictions[0].index
        for row in evaluated.methods:
            result = bench.gradient(model, image, row.method, Target(class_index=top1))
            alone = faithfulness.evaluate_result(bench, model, image, result, metrics=METRICS, steps=STEPS)
            for score, value in alone.scores.items():
                assert row.values[score][i] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, row.method, score)
    for row in evaluated.methods:
        for score in ("deletion", "insertion"):
            column = np.array(row.values[score], dtype=np.float64)
            assert row.count(score) == 3
            assert row.mean(score) == pytest.approx(column.mean(), rel=1e-12)
            assert row.sd(score) == pytest.approx(column.std(ddof=1), rel=1e-12)
    cam, plain = evaluated.methods[1], evaluated.methods[0]
    assert cam.count("average-drop") == 3 and cam.count("increase-in-confidence") == 3
    assert plain.count("average-drop") == 0 and "average-drop" in evaluated.scores()
    summary = json.loads(json.dumps(evaluated.summary()))
    assert summary["methods"][1]["scores"]["deletion"]["better"] == "lower"
    assert summary["methods"][1]["scores"]["insertion"]["mean"] == pytest.approx(cam.mean("insertion"))


def test_a_second_call_reads_the_cache_and_runs_no_model(model, index, evaluated, monkeypatch):
    scores, maps = Counted(faithfulness.evaluate_result), Counted(Workbench.gradient)
    monkeypatch.setattr(faithfulness, "evaluate_result", scores)
    monkeypatch.setattr(Workbench, "gradient", maps)
    again = evaluate_index(Workbench(), model, index, methods=METHODS, metrics=METRICS, steps=STEPS)
    assert again.cached and scores.calls == 0 and maps.calls == 0
    assert again.images == evaluated.images and again.methods == evaluated.methods
    other = evaluate_cache.identity(model, index, METHODS, METRICS, 281, STEPS, "paper")   # another target
    assert evaluate_cache.lookup(index, other) is None


def test_a_run_in_slices_gives_the_same_table_one_pair_per_slice(model, index, evaluated):
    run = evaluate_cache.start_index(Workbench(), model, index, methods=METHODS, metrics=METRICS, steps=STEPS,
                                     use_cache=False)
    slices = 0
    while not run.finished:
        before = run.done
        run.run(seconds=0)                                       # the app's slices: the job thread is free between
        slices += 1
        assert run.done == before + 1
    assert slices == 3 * len(METHODS) and run.fraction == 1.0
    found = evaluate_cache.finish(index, run)
    assert found.images == evaluated.images
    for mine, theirs in zip(found.methods, evaluated.methods):
        assert mine.values.keys() == theirs.values.keys()
        for score in mine.values:
            assert mine.values[score] == pytest.approx(theirs.values[score], rel=1e-5, abs=1e-6)
    assert evaluate_cache.lookup(index, run.identity) is not None


def test_a_damaged_cache_is_ignored_recomputed_and_written_over(model, index, evaluated, monkeypatch):
    path = evaluate_cache.path_of(index)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])                    # truncated by a crash of some other writer
    scores = Counted(faithfulness.evaluate_result)
    monkeypatch.setattr(faithfulness, "evaluate_result", scores)
    with pytest.warns(UserWarning, match="damaged evaluation cache"):
        found = evaluate_index(Workbench(), model, index, methods=("grad-cam",), metrics=("deletion",), steps=STEPS)
    assert scores.calls == 3 and not found.cached
    kept = json.loads(path.read_text())                          # written over: whole again, with the new table
    wanted = evaluate_cache.identity(model, index, ("grad-cam",), ("deletion",), None, STEPS, "paper")
    assert list(kept["entries"]) == [evaluate_cache.key_of(wanted)]
    assert evaluate_cache.lookup(index, wanted).methods == found.methods


@pytest.mark.parametrize("forge", ["string score", "short column", "other images", "infinite", "identity",
                                   "not a dict", "negative seconds", "an image hidden"])
def test_a_forged_entry_is_not_used(model, index, evaluated, forge):
    wanted = evaluate_cache.identity(model, index, METHODS, METRICS, None, STEPS, "paper")
    evaluate_cache.store(index, wanted, evaluated)
    path = evaluate_cache.path_of(index)
    kept = json.loads(path.read_text())
    entry = kept["entries"][evaluate_cache.key_of(wanted)]
    values = entry["result"]["methods"][0]["values"]
    if forge == "string score":
        values["deletion"][0] = "0.01"
    elif forge == "short column":
        values["deletion"].pop()
    elif forge == "other images":
        entry["result"]["images"][0] = "../../etc/passwd"
    elif forge == "infinite":
        path.write_text(path.read_text().replace(json.dumps(values["deletion"][0]), "Infinity", 1))
        kept = json.loads(path.read_text())
    elif forge == "identity":
        entry["identity"]["steps"] = 11                         # a table of other steps under this key
    elif forge == "not a dict":
        kept["entries"][evaluate_cache.key_of(wanted)] = [1, 2]
    elif forge == "an image hidden":                           # listed as skipped twice, one image missing
        result = entry["result"]
        result["skipped"] = [[result["images"][0], "unreadable"]]
        result["images"] = result["images"][:-1]
        for row in result["methods"]:
            row["values"] = {score: column[:-1] for score, column in row["values"].items()}
    elif forge == "negative seconds":
        entry["result"]["methods"][0]["seconds"] = -5
    if forge != "infinite":
        path.write_text(json.dumps(kept))
    with pytest.warns(UserWarning, match="damaged cached evaluation"):
        assert evaluate_cache.lookup(index, wanted) is None
    evaluate_cache.store(index, wanted, evaluated)              # what a recomputation then writes
    assert evaluate_cache.lookup(index, wanted).methods == evaluated.methods


@pytest.mark.parametrize("step", ["opened", "written", "synced"])
@pytest.mark.parametrize("before", ["old file", "no file"])
def test_a_crash_while_writing_leaves_the_old_file_or_none(model, index, evaluated, monkeypatch, step, before):
    path = evaluate_cache.path_of(index)
    wanted = evaluate_cache.identity(model, index, METHODS, METRICS, None, STEPS, "paper")
    if before == "old file":
        evaluate_cache.store(index, wanted, evaluated)
        old = path.read_bytes()
    else:
        path.unlink(missing_ok=True)
    other = evaluate_cache.identity(model, index, METHODS, METRICS, 281, STEPS, "paper")

    def crash(at: str) -> None:
        if at == step:
            raise RuntimeError(f"crash after {at}")

    monkeypatch.setattr(evaluate_cache, "crash_point", crash)
    with pytest.raises(RuntimeError, match=step):
        evaluate_cache.store(index, other, evaluated)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".evaluation")] == []   # no temporary left
    if before == "old file":
        assert path.read_bytes() == old and evaluate_cache.lookup(index, wanted) is not None
    else:
        assert not path.exists()


def test_a_killed_writers_temporary_is_removed_by_the_next_write(model, index, evaluated):
    path = evaluate_cache.path_of(index)
    left, fresh = path.parent / ".evaluation-k1ll3d.json", path.parent / ".evaluation-wr1t1ng.json"
    left.write_text('{"format": 1, "entr')                      # what os._exit in the middle of a write leaves
    fresh.write_text("{")                                        # another writer's, still being written
    os.utime(left, (time.time() - 3600, time.time() - 3600))
    wanted = evaluate_cache.identity(model, index, METHODS, METRICS, None, STEPS, "paper")
    evaluate_cache.store(index, wanted, evaluated)
    assert not left.exists() and fresh.exists()
    fresh.unlink()


def test_cancel_raises_and_keeps_nothing(model, index, monkeypatch):
    from threading import Event

    path = evaluate_cache.path_of(index)
    path.unlink(missing_ok=True)
    cancel = Event()

    def progress(fraction: float) -> None:
        if fraction > 0.2:
            cancel.set()

    with pytest.raises(Cancelled):
        evaluate_index(Workbench(), model, index, methods=METHODS, metrics=METRICS, steps=STEPS, cancel=cancel,
                       progress=progress)
    assert not path.exists() and not has_hooks(model.module)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".evaluation")] == []


def test_road_and_a_chosen_class_on_one_image(model, index, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    found = evaluate_images(Workbench(), model, [index.folder / "chelsea.jpg", bad], methods=("grad-cam",),
                            metrics=("road",), target_class=285, steps=STEPS, root=index.folder)
    assert found.target == 285 and found.images == ("chelsea.jpg",) and len(found.skipped) == 1
    row = found.methods[0]
    assert {"road", "average-drop"} <= set(found.scores()) and "deletion" not in found.scores()
    image = load_image(index.folder / "chelsea.jpg")
    bench = Workbench()
    alone = faithfulness.evaluate_result(bench, model, image, bench.gradient(model, image, "grad-cam",
                                                                              Target(class_index=285)),
                                         metrics=("road",), steps=STEPS)
    assert row.mean("road") == pytest.approx(alone.scores["road"], rel=1e-5, abs=1e-6) and row.sd("road") == 0.0


def test_bad_requests_are_one_line_errors(model, index, tmp_path):
    with pytest.raises(EvaluationError, match="unknown method 'magic'"):
        evaluate_index(Workbench(), model, index, methods=("magic",))
    with pytest.raises(EvaluationError, match="unknown metric"):
        evaluate_index(Workbench(), model, index, metrics=("accuracy",))
    with pytest.raises(EvaluationError, match="beyond mobilenet_v2's 1000 outputs"):
        evaluate_images(Workbench(), model, [index.folder / "coffee.jpg"], methods=("saliency",), target_class=1000)
    (tmp_path / "x.jpg").write_bytes(b"nope")
    with pytest.raises(EvaluationError, match="no readable image among 1 file"):
        evaluate_images(Workbench(), model, [tmp_path / "x.jpg"], methods=("saliency",))
