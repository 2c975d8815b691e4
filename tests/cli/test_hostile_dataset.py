"""The hostile-input report's rows (2026-12) for `index`, `top`, `neighbours`, `export top-patches` and
`export dataset-map`, as a matrix: each case ends in one line on stderr and exit 2, or in exit 0 where
the right answer is success or a rebuild (with at most one warning line); never a traceback or a
signal, and what was there before (the index, an earlier picture) is left intact.

In-process (cnnviewer.cli.main) except where a separate process is the point: kill -9 (#5) and two
processes on one index (#8). Two blocks of mobilenet_v2 are indexed, so a rebuild takes a second."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnviewer.engine.dataset.index import DatasetIndex
from cnnviewer.engine.dataset.lock import IndexLock
from tests.cli.test_bad_files import call
from tests.engine.test_index_integrity import assert_same, photos, small_tmpfs

LAYERS = ["--layers", "features.1", "features.2"]
ROOT = Path(__file__).resolve().parents[2]


def cli(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    """(exit status, stdout, stderr lines with the warnings) of one in-process command."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = call([str(part) for part in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and status >= 0
    lines = [line for line in err.splitlines() if line.strip()]
    return status, out, lines + [f"cnnviewer: warning: {w.message}" for w in caught]


@pytest.fixture(scope="module", autouse=True)
def one_model_load(request):
    """Every in-process command of this file shares one loaded mobilenet_v2 (as one app process
    does): the cases then cost their indexing, not a model load each."""
    from cnnviewer.engine.models import loading
    original, loaded = loading.load_model, {}

    def cached(name, **options):
        key = (name, tuple(sorted((k, str(v)) for k, v in options.items() if k != "progress")))
        if key not in loaded:
            loaded[key] = original(name, **options)
        return loaded[key]

    loading.load_model = cached
    yield
    loading.load_model = original


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """5 photos and their good index (kept as the reference), a folder of broken files only, and a
    folder whose names are not UTF-8 or hold a newline."""
    root = tmp_path_factory.mktemp("hostile-dataset")
    photos(root / "photos", "p", 7)
    (root / "broken").mkdir()
    (root / "broken" / "empty.jpg").write_bytes(b"")
    (root / "broken" / "notes.png").write_text("not pixels")
    photos(root / "names", "n", 5)   # 7 files: t-SNE's least perplexity fits
    shutil.copy(root / "photos" / "p05.png", os.fsencode(root / "names") + b"/bad\xff\xfename.png")
    shutil.copy(root / "photos" / "p06.png", root / "names" / "new\nline.png")
    with warnings.catch_warnings():
        from cnnviewer.cli import main
        assert main(["index", str(root / "photos"), *LAYERS, "-o", str(root / "good")]) == 0
    return root


def copy_index(world: Path, target: Path) -> Path:
    shutil.copytree(world / "good", target, symlinks=True)
    return target


def _manifest(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        path = index / "current" / "manifest.json"
        manifest = json.loads(path.read_text())
        changed = edit(manifest)
        path.write_text(json.dumps(manifest if changed is None else changed))
    return damage


def _truncate(name: str, size: int | None) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        path = index / "current" / name
        with open(path, "r+b") as stream:
            stream.truncate(path.stat().st_size // 2 if size is None else size)
    return damage


def _write(name: str, text: str | None, folder: bool = False) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        if folder:
            (index / name).mkdir()
            (index / name / "manifest.json").write_text(text)
        else:
            (index / name).write_text("" if text is None else text)
    return damage


def _every_npy_emptied(index: Path) -> None:
    for path in (index / "current").glob("*.npy"):
        path.write_bytes(b"")


def _row(value: int) -> Callable[[Path], None]:
    return _manifest(lambda m: m["images"][0].update(row=value))


# report row -> (damage, a warning expected): `index` rebuilds it and the result equals the good index.
DAMAGED = {
    "#13 manifest {}": (_manifest(lambda m: {}), True),
    "#13 manifest []": (_manifest(lambda m: []), True),
    "#13 manifest without folder": (_manifest(lambda m: m.pop("folder")), True),
    "#13 manifest without images": (_manifest(lambda m: m.pop("images")), True),
    "#13 shapes {}": (_manifest(lambda m: m.update(shapes={})), True),
    "#13 files is text": (_manifest(lambda m: m.update(files="3")), True),
    "#13 row 10**6": (_row(10 ** 6), True),
    "#20 negative row": (_row(-5), True),
    "#13 truncated manifest": (_truncate("manifest.json", None), True),
    "#15 npy truncated to 200 bytes": (_truncate("features.2.max_by_channel.npy", 200), True),
    "#15 npy half truncated": (_truncate("features.1.mean.npy", None), True),
    "#15 every npy empty": (_every_npy_emptied, True),
    "#15 npy of another shape": (lambda index: np.save(index / "current" / "features.2.mean.npy",
                                                      np.zeros((3, 24), np.float32)), True),
    "#15 object npy (a pickle)": (lambda index: np.save(index / "current" / "features.2.pos.npy",
                                                       np.array([{"a": 1}] * 5, dtype=object)), True),
    "#15 thumbnails truncated": (_truncate("thumbs.npy", None), True),
    "#14 .resume with a bogus manifest": (_write(".resume", '{"format": 2}', folder=True), True),
    "#14 .building is a file": (_write(".building", None), False),
    "#14 .resume is a file": (_write(".resume", None), False),
    "#13 current points nowhere": (lambda index: shutil.rmtree((index / "current").resolve()), True),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_index_is_rebuilt_with_one_warning(world, tmp_path, capsys, case):
    damage, warned = DAMAGED[case]
    index = copy_index(world, tmp_path / "index")
    damage(index)
    status, _out, lines = cli(["index", world / "photos", *LAYERS, "-o", index], capsys)
    assert status == 0 and len(lines) == int(warned), lines
    assert all(line.startswith("cnnviewer: warning: ") for line in lines)
    assert_same(DatasetIndex(index), DatasetIndex(world / "good"))
    assert sorted(p.name for p in index.iterdir()) == [".lock", "current", DatasetIndex(index).directory.name]


def test_queries_on_damaged_arrays_rebuild_and_answer_like_the_good_index(world, tmp_path, capsys):
    """A query keeps the layers of an index whose manifest is good and one array is not (#15); a
    truncated map cache is computed again, and written whole (#16)."""
    index = copy_index(world, tmp_path / "index")
    query = ["neighbours", world / "photos", world / "photos" / "p01.png", "--json", "-k", "3"]
    status, good, _ = cli([*query, "-o", world / "good"], capsys)
    _truncate("features.2.mean.npy", 100)(index)
    status, out, lines = cli([*query, "-o", index], capsys)
    assert status == 0 and json.loads(out) == json.loads(good) and len(lines) == 1
    assert_same(DatasetIndex(index), DatasetIndex(world / "good"))
    query = ["top", world / "photos", "--layer", "features.2", "--channel", "5", "-k", "3", "--json"]
    status, good, _ = cli([*query, "-o", world / "good"], capsys)
    _truncate("features.2.max_by_channel.npy", 150)(index)
    status, out, lines = cli([*query, "-o", index], capsys)
    assert status == 0 and json.loads(out) == json.loads(good) and len(lines) == 1
    cache = DatasetIndex(index).directory / "features.2.map-tsne.npz"
    cache.write_bytes(b"PK\x03\x04" + bytes(300))                            # a savez cut short
    status, _out, lines = cli(["export", "dataset-map", world / "photos", "--index-dir", index, "--side", "200",
                               "-o", tmp_path / "map.png"], capsys)
    assert status == 0 and len(lines) == 1 and "damaged map cache" in lines[0], lines
    with np.load(cache) as kept:                                              # written again, whole
        assert kept["points"].shape == (7, 2)


def one_line_error(world: Path, tmp_path: Path, capsys, argv: list, intact: Path | None = None) -> str:
    before = DatasetIndex(intact) if intact is not None else None
    status, _out, lines = cli(argv, capsys)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    if before is not None:
        assert_same(DatasetIndex(intact), before)
    return lines[0]


def test_index_options_that_name_no_usable_folder(world, tmp_path, capsys):
    """#23: -o naming a file or a device; #22: a layer named twice is indexed once."""
    photo = world / "photos" / "p00.png"
    assert "not a folder" in one_line_error(world, tmp_path, capsys, ["index", world / "photos", "-o", photo])
    assert photo.stat().st_size > 0
    assert "not a folder" in one_line_error(world, tmp_path, capsys, ["index", world / "photos", "-o", "/dev/null"])
    index = copy_index(world, tmp_path / "index")
    status, out, lines = cli(["index", world / "photos", "--layers", "features.1", "features.1", "features.2",
                              "-o", index], capsys)
    assert status == 0 and not lines and DatasetIndex(index).layers == ["features.1", "features.2"]
    assert DatasetIndex(index).directory.name == "gen-1"                      # unchanged: not rebuilt
    status, out, lines = cli(["index", world / "photos", *LAYERS, "--workers", "64", "-o", index], capsys)
    assert status == 0 and len(lines) == 1 and "--workers 64 is more than the" in lines[0]


def test_a_folder_of_only_broken_files_says_so(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    line = one_line_error(world, tmp_path, capsys, ["top", world / "broken", "--class", "1"])
    assert "no readable image under" in line


def test_read_only_and_immutable_index_folders(world, tmp_path, capsys, monkeypatch):
    """#26: a read-only file system as the index or cache folder; #29: an immutable index after the
    folder changed (top: one line) and a map whose cache cannot be written (drawn, with a warning),
    of a folder holding a file name that is not UTF-8 (#25)."""
    readonly = tmp_path / "ro"
    if small_tmpfs(readonly, "1m") is None or subprocess.run(["mount", "-o", "remount,ro", str(readonly)]).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        one_line_error(world, tmp_path, capsys, ["index", world / "photos", "-o", readonly / "idx"])
        monkeypatch.setenv("XDG_CACHE_HOME", str(readonly))
        one_line_error(world, tmp_path, capsys, ["top", world / "photos", "--class", "1"])
    finally:
        subprocess.run(["umount", str(readonly)], timeout=30)
    folder = tmp_path / "names"                          # #25 as well: a file name that is not UTF-8
    shutil.copytree(world / "names", folder)
    index = tmp_path / "immutable"
    assert cli(["index", folder, *LAYERS, "-o", index], capsys)[0] == 0
    generation = (index / "current").resolve()
    frozen = [index, index / ".lock", generation, *generation.iterdir()]
    if subprocess.run(["chattr", "+i", *map(str, frozen)], capture_output=True).returncode:
        pytest.skip("chattr +i is not possible here")
    try:
        status, _out, lines = cli(["export", "dataset-map", folder, "--index-dir", index, "--side", "200",
                                   "-o", tmp_path / "map.png"], capsys)
        assert status == 0 and len(lines) == 1 and "the map is not cached" in lines[0], lines
        assert Image.open(tmp_path / "map.png").size == (200, 200)
        photos(folder, "q", 1)                                                # the folder changed
        line = one_line_error(world, tmp_path, capsys, ["top", folder, "--class", "1", "-o", index], intact=index)
        assert "cannot" in line
    finally:
        subprocess.run(["chattr", "-i", *map(str, frozen)], capture_output=True)


def test_a_newline_in_a_file_name_stays_on_one_output_line(world, tmp_path, capsys):
    index = tmp_path / "index"
    assert cli(["index", world / "names", *LAYERS, "-o", index], capsys)[0] == 0
    status, out, _lines = cli(["neighbours", world / "names", world / "names" / "n00.png", "-k", "7", "-o", index],
                              capsys)
    assert status == 0 and len(out.splitlines()) == 7 and "new\\nline.png" in out


def test_a_full_disk_leaves_an_earlier_picture_intact(world, tmp_path, capsys):
    """#27: `export top-patches` onto a full disk: one line, the earlier picture unchanged, no
    temporary file and no 0-byte file left. #4: `index` there: one line, no staging left."""
    disk = small_tmpfs(tmp_path / "disk", "512k")
    if disk is None:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        earlier = disk / "top.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120, 3), np.uint8)).save(earlier)
        kept = earlier.read_bytes()
        with open(disk / "fill", "wb") as stream:
            try:
                stream.write(bytes(1 << 20))
            except OSError:
                pass
        line = one_line_error(world, tmp_path, capsys, ["export", "top-patches", world / "photos", "--layer",
                                                        "features.2", "-k", "4", "--index-dir", world / "good",
                                                        "-o", earlier])
        assert "could not be written" in line
        assert earlier.read_bytes() == kept and sorted(p.name for p in disk.iterdir()) == ["fill", "top.png"]
        one_line_error(world, tmp_path, capsys, ["index", world / "photos", *LAYERS, "-o", disk / "idx"])   # #4
        assert not (disk / "idx" / ".building").exists()
    finally:
        subprocess.run(["umount", str(disk)], timeout=30)


# ---------------------------------------------------------------- separate processes
def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def command(*argv) -> list[str]:
    return [sys.executable, "-m", "cnnviewer", *map(str, argv)]


def environment(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "CNNVIEWER_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path)}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_kill_9_of_index_leaves_no_worker_behind(tmp_path):
    """#5: the decoding worker exits when `index` is killed with SIGKILL (no cleanup runs)."""
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(400):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(folder / f"{i:04d}.png")
    # Batches of 32: their thumbnails (384 KiB) do not fit in the result pipe, so a worker whose parent
    # is gone blocks in its queue's feeder thread at exit: the orphan of the report.
    process = subprocess.Popen(command("index", folder, "--layers", "features.1", "--batch-size", "32", "--workers",
                                       "1", "-o", tmp_path / "index"), env=environment(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, workers = time.monotonic() + 90, []
        while not workers and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            workers = children(process.pid)
        assert workers, "no worker was started"
        time.sleep(2.0)                                   # batches decoded, waiting for the parent
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers)
    finally:
        for pid in [process.pid, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_second_index_process_waits_for_the_first_and_says_so(world, tmp_path):
    """#8: another process holds the index folder's lock; `index` names it, waits, then succeeds."""
    index = copy_index(world, tmp_path / "index")
    holder = IndexLock(index)
    assert holder.acquire()
    release = threading.Timer(90, holder.release)      # never a hang, even if the line never comes
    release.start()
    process = subprocess.Popen(command("index", world / "photos", *LAYERS, "-o", index), env=environment(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stderr.readline()
        assert f"being indexed by process {os.getpid()}" in first and first.startswith("cnnviewer: warning: ")
        holder.release()
        out, err = process.communicate(timeout=120)
    finally:
        release.cancel()
        holder.release()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and not err.strip() and "7 images indexed" in out
    assert_same(DatasetIndex(index), DatasetIndex(world / "good"))
