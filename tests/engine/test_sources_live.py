"""Frame sources (video file, image folder) and the live pipeline, on the moving-astronaut clip."""

from __future__ import annotations

import threading
import time

import pytest

from cnnviewer.engine.detection.detectors import make_detector
from cnnviewer.engine.detection.live import LatestFrame, LivePipeline
from cnnviewer.engine.detection.overlay import apply_thresholds
from cnnviewer.engine.errors import ImageError
from cnnviewer.engine.media.sources import Frame, VideoFile, open_source
from tests.media import astronaut_frame, iou, write_video


@pytest.fixture(scope="module")
def faces():
    return make_detector("mtcnn")


@pytest.mark.parametrize("kind", ["video", "folder"])
def test_mtcnn_finds_each_face_where_it_is(astronaut_clip, faces, kind):
    source = open_source(astronaut_clip.video if kind == "video" else astronaut_clip.folder)
    assert isinstance(source, VideoFile) == (kind == "video")
    seen = 0
    with source:
        for frame in source:
            assert frame.pixels.shape == (480, 640, 3)
            expected = astronaut_clip.faces[frame.index]
            found = apply_thresholds(faces.raw(frame.pixels), 0.9, 0.5)
            assert len(found) == len(expected), frame.name
            for box in expected:                             # each known face matched by one box
                assert max(iou(d.box, box) for d in found) > 0.75, frame.name
            for d in found:
                x1, y1, x2, y2 = d.box
                assert len(d.points) == 5 and all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in d.points)
            seen += 1
    assert seen == 12


def test_a_video_that_breaks_off_reports_it(astronaut_clip, tmp_path):
    frames = [astronaut_frame(index)[0] for index in range(12)]
    data = write_video(tmp_path / "whole.avi", frames).read_bytes()
    broken = tmp_path / "broken.avi"
    broken.write_bytes(data[: len(data) // 2])                 # the file stops half way
    read, errors = 0, []
    with open_source(broken) as source:
        while True:
            try:
                frame = source.read()
            except ImageError as error:
                errors.append(str(error))
                continue
            if frame is None:
                break
            read += 1
    assert 0 < read < 12                                  # what was there played; then it ended cleanly
    (tmp_path / "noise.mp4").write_bytes(b"\x00not a video" * 100)
    with pytest.raises(ImageError, match="not a readable video"):
        open_source(tmp_path / "noise.mp4")
    with pytest.raises(ImageError, match="no such file"):
        open_source(tmp_path / "missing.mp4")


def test_latest_frame_wins():
    slot = LatestFrame()
    for index in range(3):
        slot.put(Frame(index, str(index), None, time.perf_counter()))
    assert slot.take(0).index == 2 and slot.take(0) is None       # older frames were dropped
    lossless = LatestFrame()
    lossless.put(Frame(0, "0", None, 0.0))
    waiter = threading.Thread(target=lambda: lossless.put(Frame(1, "1", None, 0.0), lossless=True))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()                                   # waits until frame 0 is taken
    assert lossless.take(0).index == 0
    waiter.join(2)
    assert lossless.take(1).index == 1


def test_pipeline_every_frame_in_order_then_a_bad_one_and_a_bad_detector(astronaut_clip, tmp_path):
    results, errors, ended = [], [], threading.Event()
    pipeline = LivePipeline(results.append, on_error=errors.append, on_end=ended.set)
    try:
        pipeline.set_detector("mtcnn")
        pipeline.play(open_source(astronaut_clip.folder), realtime=False)
        assert ended.wait(60)
        deadline = time.time() + 10
        while len(results) < 12 and time.time() < deadline:
            time.sleep(0.05)
        assert [r.frame.index for r in results] == list(range(12))      # lossless: none dropped
        assert [len(apply_thresholds(r.raw, 0.9, 0.5)) for r in results] == [1] * 6 + [2] * 6
        assert all(r.detect_ms > 0 and r.frame.captured <= time.perf_counter() for r in results)

        folder = tmp_path / "mixed"
        folder.mkdir()
        for name in ("0000.png", "0001.png"):
            (folder / name).write_bytes((astronaut_clip.folder / name).read_bytes())
        (folder / "0000b.png").write_bytes(b"broken")                      # fails mid-stream
        ended.clear()
        results.clear()
        pipeline.play(open_source(folder), realtime=False)
        assert ended.wait(60)
        time.sleep(0.5)
        assert any("0000b.png" in e for e in errors) and [r.frame.name for r in results] == ["0000.png", "0001.png"]

        pipeline.set_detector("ssdlite320_mobilenet_v3_large", str(tmp_path / "missing.pth"))
        results.clear()
        pipeline.offer(results and results[-1].frame or next(iter(open_source(astronaut_clip.folder))))
        deadline = time.time() + 20
        while not results and time.time() < deadline:
            time.sleep(0.05)
        assert any("missing.pth" in e for e in errors)                     # said why...
        assert results and results[0].detector.name == "mtcnn"             # ...and the old detector goes on
    finally:
        pipeline.close()


def test_realtime_play_drops_frames_rather_than_queueing(astronaut_clip):
    results = []
    ended = threading.Event()
    pipeline = LivePipeline(results.append, on_end=ended.set)
    try:
        pipeline.set_detector("mtcnn")
        source = open_source(astronaut_clip.folder)
        source.fps = 200.0                          # far faster than the detector
        pipeline.play(source, realtime=True)
        assert ended.wait(30)
        time.sleep(0.5)
        indices = [r.frame.index for r in results]
        assert indices == sorted(indices) and len(indices) < 12 and indices[-1] >= 10
        latencies = [r.detect_ms for r in results]
        assert max(latencies) < 2000
    finally:
        pipeline.close()


@pytest.mark.parametrize("kind", ["video", "folder"])
def test_sources_seek_to_the_exact_frame(astronaut_clip, kind):
    """Jumping (position slider, replay) lands on that frame, not the nearest key frame."""
    import numpy as np

    path = astronaut_clip.video if kind == "video" else astronaut_clip.folder
    with open_source(path) as source:
        frames = [frame.pixels for frame in source]
    with open_source(path) as source:
        assert source.length in (12, None) and (kind == "video" or source.length == 12)
        for index in (7, 2, 11, 0):
            source.seek(index)
            frame = source.read()
            assert frame.index == index
            assert np.abs(frame.pixels.astype(int) - frames[index]).mean() < 1.0   # the same picture
        source.seek(11)
        source.read()
        assert source.read() is None


def test_pipeline_seeks_while_paused_replays_and_loops(astronaut_clip):
    results, ended = [], threading.Event()
    pipeline = LivePipeline(results.append, on_end=ended.set)
    try:
        pipeline.set_detector("mtcnn")
        pipeline.play(open_source(astronaut_clip.folder), realtime=False)
        assert ended.wait(60)
        time.sleep(0.3)
        results.clear()
        pipeline.pause(True)
        pipeline.seek(5)                                   # after the end: read again, one frame
        deadline = time.time() + 20
        while not results and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert [r.frame.index for r in results] == [5]
        results.clear()
        ended.clear()
        pipeline.loop = True
        pipeline.pause(False)
        deadline = time.time() + 60
        while not (any(r.frame.index == 11 for r in results) and results[-1].frame.index < 11) \
                and time.time() < deadline:
            time.sleep(0.05)
        indices = [r.frame.index for r in results]
        assert 11 in indices and indices[-1] < 11 and not ended.is_set()   # went round, never ended
    finally:
        pipeline.close()


def test_a_step_at_the_end_of_a_looping_source_shows_its_first_frame(astronaut_clip):
    """The step was spent on reading the end (None) and nothing showed until a second Step."""
    results = []
    pipeline = LivePipeline(results.append)
    try:
        pipeline.loop = True
        pipeline.set_detector("mtcnn")
        pipeline.pause(True)
        pipeline.play(open_source(astronaut_clip.folder), realtime=False)
        pipeline.seek(11)                                  # the last frame, shown while paused
        deadline = time.time() + 30
        while not results and time.time() < deadline:
            time.sleep(0.05)
        assert [r.frame.index for r in results] == [11]
        pipeline.step()                                    # past the end: frame 0 again
        while len(results) < 2 and time.time() < deadline + 30:
            time.sleep(0.05)
        time.sleep(0.3)
        assert [r.frame.index for r in results] == [11, 0]
    finally:
        pipeline.close()
