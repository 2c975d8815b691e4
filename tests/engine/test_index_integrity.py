"""The dataset index never holds wrong data (hostile-input report #2 #4 #6 #7 #8 #21): a crash after
any step of a commit leaves the old index or the new one, a file changed or deleted while it is read
is left for the next run, a full disk is one error with the staging removed, one build at a time.

Only the first two blocks of mobilenet_v2 are indexed (the forward pass stops there), so a build
of a dozen photos takes about a second here."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cnnviewer.engine.dataset import store
from cnnviewer.engine.dataset.build import IndexBuild, build_index
from cnnviewer.engine.dataset.index import DatasetIndex, IndexError_, array_file
from cnnviewer.engine.dataset.lock import IndexBusyWarning, IndexLock
from cnnviewer.engine.models.loading import load_model

LAYERS = ["features.1", "features.2"]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")


def photos(folder: Path, prefix: str = "", count: int = 6) -> None:
    """`count` small photos (different content each) under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = getattr(data, PHOTOS[i % len(PHOTOS)])()
        picture = Image.fromarray(pixels).convert("RGB").resize((96 + 8 * i, 96))
        picture.rotate(30 * (i // len(PHOTOS))).save(folder / f"{prefix}{i:02d}.png")


def contents(index: DatasetIndex) -> dict[str, np.ndarray | list]:
    """Everything a query reads: every array, the rows and the skipped files."""
    found: dict[str, np.ndarray | list] = {"images": index.manifest["images"], "skipped": index.manifest["skipped"]}
    for layer in index.layers:
        for kind in ("max", "pos", "mean", "max_by_channel"):
            found[f"{layer}.{kind}"] = np.load(index.directory / array_file(layer, kind))
    found["thumbs"] = np.load(index.directory / "thumbs.npy")
    return found


def assert_same(one: DatasetIndex, two: DatasetIndex) -> None:
    """Bit for bit."""
    first, second = contents(one), contents(two)
    assert first.keys() == second.keys()
    for key, value in first.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, second[key], err_msg=key)
        else:
            assert value == second[key], key


@pytest.fixture(scope="module")
def model():
    return load_model("mobilenet_v2")


class SimulatedCrash(BaseException):
    """Stands for kill -9 or a power cut: nothing after it runs (not even `except Exception`)."""


COMMIT_STEPS = ["by-channel written", "manifest written", "synced", "renamed", "switched",
                "old generation removed", "checkpoint removed"]


@pytest.fixture(scope="module")
def update(model, tmp_path_factory):
    """An index of 6 photos, then 4 more added that sort BEFORE them (every old row moves: the case
    where an old manifest beside new arrays read the wrong rows), and that update done cleanly."""
    root = tmp_path_factory.mktemp("update")
    photos(root / "photos", "n", 6)
    build_index(root / "photos", model, root / "base", layers=LAYERS, batch_size=4)
    photos(root / "photos", "a", 4)
    shutil.copytree(root / "base", root / "clean", symlinks=True)
    clean = build_index(root / "photos", model, root / "clean", layers=LAYERS, batch_size=4)
    return root, clean


@pytest.mark.parametrize("step", COMMIT_STEPS)
def test_a_crash_after_any_step_of_the_commit_leaves_the_old_or_the_new_index(model, update, tmp_path,
                                                                              monkeypatch, step):
    root, clean = update
    work = tmp_path / "index"
    shutil.copytree(root / "base", work, symlinks=True)
    old = DatasetIndex(root / "base")

    def crash(reached: str) -> None:
        if reached == step:
            raise SimulatedCrash(step)

    monkeypatch.setattr(store, "crash_point", crash)
    with pytest.raises(SimulatedCrash):
        build_index(root / "photos", model, work, layers=LAYERS, batch_size=4)
    monkeypatch.undo()
    switched = COMMIT_STEPS.index(step) >= COMMIT_STEPS.index("switched")
    assert_same(DatasetIndex(work), clean if switched else old)          # what a reader sees right after
    again = build_index(root / "photos", model, work, layers=LAYERS, batch_size=4)
    assert_same(again, clean)
    assert again.top("features.2", 3, 4) == [hit for hit in clean.top("features.2", 3, 4)]
    left = sorted(p.name for p in work.iterdir())
    assert left == [".lock", "current", again.directory.name], left     # nothing half-made stays


def test_an_index_of_the_older_layout_is_read_and_updated_into_a_generation(model, update, tmp_path):
    root, clean = update
    legacy = tmp_path / "legacy"
    shutil.copytree(root / "base" / "current", legacy)                  # manifest and arrays in the folder
    assert DatasetIndex(legacy).directory == legacy
    updated = build_index(root / "photos", model, legacy, layers=LAYERS, batch_size=4)
    assert_same(updated, clean)
    assert not (legacy / "manifest.json").exists() and not list(legacy.glob("*.npy"))


def test_a_file_rewritten_or_truncated_while_it_is_read_is_left_for_the_next_run(model, tmp_path, monkeypatch):
    """Between the worker's decoding and the store, one file is overwritten by another photo and one
    emptied: neither keeps what was decoded; the next run reads both again and equals a fresh index."""
    import cnnviewer.engine.dataset.extract as extract_module

    photos(tmp_path / "photos", "p", 6)
    rewritten, emptied = tmp_path / "photos" / "p01.png", tmp_path / "photos" / "p03.png"
    original = extract_module._Images.__getitem__

    def decode_then_change(self, position):
        item = original(self, position)
        if self.files[position] == rewritten:
            time.sleep(0.01)
            Image.fromarray(data.camera()).convert("RGB").resize((100, 90)).save(rewritten)
        elif self.files[position] == emptied:
            emptied.write_bytes(b"")
        return item

    monkeypatch.setattr(extract_module._Images, "__getitem__", decode_then_change)
    first = build_index(tmp_path / "photos", model, tmp_path / "index", layers=LAYERS, batch_size=2)
    monkeypatch.undo()
    listed = {row["path"] for row in first.manifest["images"]} | {row["path"] for row in first.manifest["skipped"]}
    assert listed == {"p00.png", "p02.png", "p04.png", "p05.png"}       # the two changed ones: not recorded
    second = build_index(tmp_path / "photos", model, tmp_path / "index", layers=LAYERS, batch_size=2)
    assert second.manifest["read"] == 2 and [row["path"] for row in second.manifest["skipped"]] == ["p03.png"]
    fresh = build_index(tmp_path / "photos", model, tmp_path / "fresh", layers=LAYERS, batch_size=2)
    row = next(r["row"] for r in fresh.manifest["images"] if r["path"] == "p01.png")
    for layer in LAYERS:
        np.testing.assert_allclose(second.array(layer, "max")[row], fresh.array(layer, "max")[row], rtol=1e-5,
                                   atol=1e-5)
    assert second.manifest["images"] == fresh.manifest["images"]


def test_a_file_deleted_or_the_folder_moved_while_indexing_is_no_traceback(model, tmp_path, monkeypatch):
    import cnnviewer.engine.dataset.extract as extract_module

    photos(tmp_path / "photos", "p", 6)
    original = extract_module._Images.__getitem__
    gone = tmp_path / "photos" / "p02.png"

    def delete_first(self, position):
        if self.files[position] == gone:
            gone.unlink()
        return original(self, position)

    monkeypatch.setattr(extract_module._Images, "__getitem__", delete_first)
    index = build_index(tmp_path / "photos", model, tmp_path / "index", layers=LAYERS, batch_size=2)
    assert "p02.png" not in {row["path"] for row in index.manifest["images"] + index.manifest["skipped"]}
    assert len(index.manifest["images"]) == 5

    moved = tmp_path / "moved"

    def move_folder(self, position):
        if (tmp_path / "photos").exists():                              # as the first file is read
            (tmp_path / "photos").rename(moved)
        return original(self, position)

    Image.fromarray(data.camera()).convert("RGB").save(tmp_path / "photos" / "p02.png")   # something to read
    monkeypatch.setattr(extract_module._Images, "__getitem__", move_folder)
    with pytest.raises(IndexError_, match="moved or deleted while it was indexed"):
        build_index(tmp_path / "photos", model, tmp_path / "index", layers=LAYERS, batch_size=2)
    assert not (tmp_path / "index" / ".building").exists()
    assert_same(DatasetIndex(tmp_path / "index"), index)                 # the index before is intact


def test_a_full_disk_is_one_error_and_leaves_the_index_and_no_staging(model, update, tmp_path, monkeypatch):
    """ENOSPC injected where space is reserved (posix_fallocate): no SIGBUS later, one line now."""
    root, _clean = update
    work = tmp_path / "index"
    shutil.copytree(root / "base", work, symlinks=True)

    def full(_handle, _offset, _size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(IndexError_, match="no space left"):
        build_index(root / "photos", model, work, layers=LAYERS, batch_size=4)
    monkeypatch.undo()
    assert not (work / ".building").exists()
    assert_same(DatasetIndex(work), DatasetIndex(root / "base"))


def small_tmpfs(where: Path, size: str) -> Path | None:
    """A tmpfs of `size` mounted at `where` (root in a container that allows it), else None."""
    where.mkdir()
    if os.geteuid() != 0:
        return None
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, timeout=30)
    return where if result.returncode == 0 else None


def test_a_real_full_disk_is_one_error_not_a_sigbus(model, tmp_path):
    """On a 256 KiB tmpfs the staging arrays of 40 photos (their thumbnails alone: 480 KiB) cannot fit."""
    disk = small_tmpfs(tmp_path / "disk", "256k")
    if disk is None:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        photos(tmp_path / "photos", "p", 40)
        with pytest.raises(IndexError_, match="no space left"):
            build_index(tmp_path / "photos", model, disk / "index", layers=LAYERS, batch_size=8)
        assert sorted(p.name for p in (disk / "index").iterdir()) == [".lock"]
    finally:
        subprocess.run(["umount", str(disk)], timeout=30)


def test_a_second_build_of_one_index_waits_for_the_first(model, tmp_path, recwarn):
    """Another process's build holds the folder's lock (an fcntl lock of its own descriptor stands
    for it): this build says who it waits for, writes nothing meanwhile, and then builds."""
    photos(tmp_path / "photos", "p", 4)
    (tmp_path / "index").mkdir()
    other = IndexLock(tmp_path / "index")
    assert other.acquire()
    result: list = []
    thread = threading.Thread(target=lambda: result.append(
        build_index(tmp_path / "photos", model, tmp_path / "index", layers=LAYERS, batch_size=4)))
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive() and not (tmp_path / "index" / ".building").exists()
    busy = [w for w in recwarn if issubclass(w.category, IndexBusyWarning)]
    assert busy and f"being indexed by process {os.getpid()}" in str(busy[0].message)
    other.release()
    thread.join(60)
    assert not thread.is_alive() and len(result[0].manifest["images"]) == 4


def test_a_newer_build_in_the_same_process_takes_the_lock_over(model, tmp_path):
    """The app may start a build for a folder while an older one for it is paused on the job thread:
    the newer one gets the lock (no deadlock) and the older one can no longer write."""
    photos(tmp_path / "photos", "p", 4)
    older = IndexBuild(tmp_path / "photos", model, tmp_path / "index", layers=LAYERS, batch_size=2)
    assert not older.run(seconds=0.0)
    newer = IndexBuild(tmp_path / "photos", model, tmp_path / "index", layers=LAYERS, batch_size=2)
    with pytest.raises(IndexError_, match="newer one took over"):
        older.run()
    newer.run()
    assert len(newer.finish().manifest["images"]) == 4


def test_a_paused_build_does_not_hold_the_lock(model, tmp_path):
    """The app's Pause (checkpoint, close) frees the folder for another process's build at once."""
    photos(tmp_path / "photos", "p", 4)
    paused = IndexBuild(tmp_path / "photos", model, tmp_path / "index", layers=LAYERS, batch_size=2)
    assert not paused.run(seconds=0.0)
    paused.checkpoint()
    paused.close()
    import fcntl
    with open(tmp_path / "index" / ".lock", "r+b") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)          # BlockingIOError while it is held


def test_one_image_reduces_without_a_numpy_warning():
    """Report, lower-severity row: facets of a one-image folder printed 'invalid value encountered in
    divide' (PCA of one sample divides by n - 1 = 0)."""
    import warnings

    from cnnviewer.engine.dataset.embedding import kmeans, reduce
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reduced = reduce(np.random.default_rng(0).random((1, 64), dtype=np.float32))
        assert reduced.shape == (1, 64) and kmeans(reduced, 4).tolist() == [0]


def test_waiting_for_another_build_is_reported_and_can_be_cancelled(tmp_path):
    """The app's job thread is shared by every panel: it hears that another process is indexing
    (to show it) and stops waiting when the job is cancelled, instead of blocking until that run ends."""
    from cnnviewer.engine.errors import Cancelled

    holder = IndexLock(tmp_path)
    assert holder.acquire()
    heard, cancel = [], threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.perf_counter()
    with pytest.raises(Cancelled):
        IndexLock(tmp_path).acquire(waiting=heard.append, cancel=cancel)
    assert 0.4 < time.perf_counter() - started < 5
    assert heard == [f"{tmp_path} is being indexed by process {os.getpid()}; waiting for it to finish"]
    holder.release()
    second = IndexLock(tmp_path)
    assert second.acquire(waiting=heard.append, cancel=threading.Event()) and len(heard) == 1
    second.release()


def test_an_open_index_keeps_answering_after_another_build_replaced_its_generation(model, tmp_path):
    """The window holds an index open while a command-line run updates it and removes the generation
    the window reads: the window's answers stay those of the index it opened, never an error or a mix."""
    folder, directory = tmp_path / "photos", tmp_path / "index"
    photos(folder)
    build_index(folder, model, directory, layers=LAYERS)
    opened = DatasetIndex(directory)
    before = [(hit.row, hit.value) for hit in opened.top("features.2", 3, 4)]
    thumbs = opened.thumbnails(opened.valid_rows)
    photos(folder, prefix="a", count=3)                         # sort before: every row moves
    build_index(folder, model, directory, layers=LAYERS)
    assert not opened.directory.exists()                        # its generation is gone from disk
    assert [(hit.row, hit.value) for hit in opened.top("features.2", 3, 4)] == before
    np.testing.assert_array_equal(opened.thumbnails(opened.valid_rows), thumbs)
    assert len(DatasetIndex(directory).valid_rows) == 9


def test_a_relative_index_folder_keeps_its_index(model, tmp_path, monkeypatch):
    """QA re-run of the report: `-o idx/x` (relative) compared the resolved generation in use with the
    unresolved ones and removed them all, so every query destroyed a good index."""
    photos(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    build_index("photos", model, Path("idx"), layers=LAYERS)
    first = DatasetIndex(Path("idx"))
    again = build_index("photos", model, Path("idx"), layers=LAYERS)      # unchanged: opened as it is
    assert again.directory.is_dir() and first.directory.is_dir()
    photos(tmp_path / "photos", prefix="b", count=2)
    updated = build_index("photos", model, Path("idx"), layers=LAYERS)
    assert updated.directory.is_dir() and len(DatasetIndex(Path("idx")).valid_rows) == 8
    assert [p.name for p in Path("idx").glob("gen-*")] == [updated.directory.name]


def test_an_update_where_every_file_became_unreadable_gives_an_empty_index(model, tmp_path):
    """QA re-run: emptying every file of an indexed folder made the next update fail ('cannot write
    the index') and left it stuck; it is an index of no image, with every file listed as skipped."""
    folder = tmp_path / "photos"
    photos(folder, count=3)
    build_index(folder, model, tmp_path / "index", layers=LAYERS)
    for path in folder.iterdir():
        path.write_bytes(b"")
    index = build_index(folder, model, tmp_path / "index", layers=LAYERS)
    assert len(index.valid_rows) == 0 and len(index.skipped) == 3
    assert len(build_index(folder, model, tmp_path / "index", layers=LAYERS).skipped) == 3
