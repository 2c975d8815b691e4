"""Issue 25, live segmentation: segmenters behind the Detector interface, through the live pipeline.

Frames of a short video written with PyAV; torchvision's LR-ASPP with random weights (none offline,
and said so) at a small size; the fully convolutional MobileNetV2 with its real offline weights on a
cat. Also: a Step after a paused source ran to its end reads on (it used to do nothing, forever).
"""

from __future__ import annotations

import errno
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from cnnviewer.engine.detection.detectors import Detector
from cnnviewer.engine.detection.live import LivePipeline
from cnnviewer.engine.detection.overlay import Detection
from cnnviewer.engine.errors import CnnViewerError, ModelError
from cnnviewer.engine.media.sources import Frame, ImageSequence, open_source
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.segmentation.live import (
    FullyConvolutionalSegmenter,
    Segmenter,
    TorchvisionSegmenter,
    is_segmenter,
    make_live_model,
    make_segmenter,
    nearest,
    segmenter_names,
)
from cnnviewer.engine.segmentation.live_scene import (
    LiveClassMap,
    blend,
    legend_html,
    make_class_map,
    save_capture,
)
from cnnviewer.engine.segmentation.overlay import palette
from tests.media import astronaut_frame, write_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CATS = {281, 282, 283, 284, 285}          # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[np.ndarray]:
    """Three frames decoded from a video file, 320x240 (small: random-weight models in a test)."""
    folder = tmp_path_factory.mktemp("clip")
    pixels = [np.asarray(Image.fromarray(astronaut_frame(i)[0]).resize((320, 240))) for i in range(3)]
    with open_source(write_video(folder / "clip.mp4", pixels, fps=10)) as source:
        return [frame.pixels for frame in source]


def test_a_torchvision_segmenter_labels_every_pixel_of_a_frame(frames):
    segmenter = make_live_model("lraspp_mobilenet_v3_large")        # the live pipeline's factory
    assert isinstance(segmenter, TorchvisionSegmenter) and not segmenter.trained   # no VOC weights here
    assert segmenter.model.training is False and segmenter.categories[0] == "__background__"
    raw, class_map = segmenter.run(frames[0])
    assert raw == [] and segmenter.raw(frames[0]) == []
    assert class_map.labels.shape == class_map.confidence.shape == (240, 320)
    assert class_map.colour.shape == (240, 320, 3) and class_map.colour.dtype == np.uint8
    assert class_map.working_size == class_map.map_size == (240, 320)       # short side 240 < 320: as is
    assert sum(entry.share for entry in class_map.legend) == pytest.approx(1.0)
    counts = np.bincount(class_map.labels.ravel(), minlength=21)
    assert [e.index for e in class_map.legend] == sorted(np.flatnonzero(counts), key=lambda i: -counts[i])
    assert np.all((class_map.confidence > 1 / 21 - 1e-6) & (class_map.confidence <= 1 + 1e-6))
    again = segmenter.segment(frames[0])                             # the same frame, the same map
    assert np.array_equal(again.labels, class_map.labels)
    big = np.asarray(Image.fromarray(frames[1]).resize((640, 480)))
    assert segmenter.segment(big).working_size == (320, 427)         # shrunk to its working size
    assert segmenter.segment(big).labels.shape == (480, 640)         # labels back at the frame's


@pytest.mark.parametrize("name", ["mobilenet_v2", "timm:tf_efficientnet_lite0"])   # both real, offline
def test_the_fully_convolutional_classifier_finds_the_cat_and_leaves_the_model_as_found(name):
    model = load_model(name)
    module = model.module.train()                                    # found in training mode: stays so
    next(module.parameters()).requires_grad_(False)
    grads = [p.requires_grad for p in module.parameters()]
    segmenter = FullyConvolutionalSegmenter(model)
    assert segmenter.trained and segmenter.name == f"{name} (fully convolutional)"
    cat = np.asarray(Image.fromarray(data.chelsea()).resize((640, 480)))
    class_map = segmenter.segment(cat)
    assert class_map.labels.shape == (480, 640) and class_map.working_size == (336, 448)
    assert class_map.map_size == (11, 14)                            # stride 32
    assert class_map.legend[0].index in CATS, class_map.legend[:3]   # no background class in ImageNet
    assert sum(e.share for e in class_map.legend if e.index in CATS) > 0.5
    assert sum(e.share for e in class_map.legend) == pytest.approx(1.0)
    assert module.training and [p.requires_grad for p in module.parameters()] == grads
    assert not has_hooks(module)
    module.eval()
    before = segmenter.segment(cat).labels
    assert np.array_equal(before, class_map.labels)                  # eval for the pass either way


def test_segmentation_runs_in_the_live_pipeline(frames, tmp_path):
    for i, pixels in enumerate(frames):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    results, ended = [], threading.Event()
    pipeline = LivePipeline(results.append, on_end=ended.set, on_error=results.append)
    try:
        pipeline.set_detector("lraspp_mobilenet_v3_large")
        pipeline.play(open_source(tmp_path), realtime=False)          # lossless: every frame
        assert ended.wait(120)
        deadline = threading.Event()
        for _ in range(100):
            if len(results) == 3:
                break
            deadline.wait(0.1)
        assert [r.frame.index for r in results] == [0, 1, 2], results
        for result in results:
            assert result.raw == [] and result.segmentation.labels.shape == (240, 320)
            assert result.detector.name == "lraspp_mobilenet_v3_large" and result.detect_ms > 0
    finally:
        pipeline.close()


def test_a_step_after_a_paused_source_ended_reads_on(frames):
    """A paused source that ran to its end: ticking Loop, then Step shows its first frame again."""
    results, ended = [], threading.Event()
    pipeline = LivePipeline(results.append, on_end=ended.set)
    try:
        pipeline.set_detector("lraspp_mobilenet_v3_large")
        source = _frames_source(frames)
        pipeline.play(source, realtime=False)
        assert ended.wait(120)
        wait = threading.Event()
        for _ in range(200):
            if len(results) == 3:
                break
            wait.wait(0.1)
        pipeline.pause(True)
        pipeline.loop = True
        pipeline.step()
        for _ in range(300):
            if len(results) > 3:
                break
            wait.wait(0.1)
        assert [r.frame.index for r in results] == [0, 1, 2, 0]
    finally:
        pipeline.close()


def _frames_source(frames: list[np.ndarray]) -> ImageSequence:
    """An in-memory frame source of known length that can seek (as a folder of images)."""
    import time

    from cnnviewer.engine.media.sources import Frame

    class Frames(ImageSequence):
        def read(self):
            if self._next >= len(frames):
                return None
            self._next += 1
            return Frame(self._next - 1, f"frame {self._next - 1}", frames[self._next - 1], time.perf_counter())

    return Frames([None] * len(frames), "frames")


def test_names_the_blend_and_the_legend(frames):
    names = segmenter_names()
    assert "mobilenet_v2 (fully convolutional)" in names and "fcn_resnet50" in names and len(names) == 8
    from cnnviewer.ui.panels.live_segmentation import SEGMENTERS   # the panel's torch-free copy
    assert sorted(SEGMENTERS) == sorted(names)
    with pytest.raises(ModelError, match="unknown segmentation model"):
        make_segmenter("fcn_resnet18")
    with pytest.raises(ModelError, match="not global average pooling"):
        make_segmenter("squeezenet1_0 (fully convolutional)")   # conv head
    with pytest.raises(ModelError, match="custom weights"):
        make_live_model("lraspp_mobilenet_v3_large", weights="x.pth")
    grid = np.arange(6).reshape(2, 3)
    assert np.array_equal(nearest(grid, 4, 6), np.repeat(np.repeat(grid, 2, 0), 2, 1))
    class_map = make_segmenter("lraspp_mobilenet_v3_large").segment(frames[2])
    pixels = frames[2]
    assert np.array_equal(blend(pixels, class_map, 0.0), pixels)
    assert np.array_equal(blend(pixels, class_map, 1.0), class_map.colour)
    half = blend(pixels, class_map, 0.5).astype(int)
    assert np.abs(half - (pixels.astype(int) + class_map.colour) / 2).max() <= 1
    html = legend_html(class_map)
    assert class_map.legend[0].name in html and "%" in html
    assert torch.get_num_threads() == 1


def test_what_the_window_thread_imports_for_segmentation_loads_no_torch():
    """The panel's segmentation module and the class map it draws are numpy only (the GUI thread)."""
    import os
    import subprocess
    import sys
    code = ("import sys\nimport cnnviewer.ui.panels.live_detection, cnnviewer.ui.panels.live_segmentation\n"
            "import cnnviewer.engine.segmentation.live_scene\n"
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


class _Boxes(Detector):
    """A detector that finds one box in every frame (no model: quick)."""

    name = "boxes"

    def raw(self, pixels: np.ndarray) -> list[Detection]:
        return [Detection((1.0, 1.0, 5.0, 5.0), 0.9, "thing", 1)]


class _Labels(Segmenter):
    """A segmenter that labels every pixel class 0 (no model: quick)."""

    categories = ("background",)

    def __init__(self, name: str) -> None:
        self.name = name

    def segment(self, pixels: np.ndarray) -> LiveClassMap:
        height, width = pixels.shape[:2]
        return make_class_map(np.zeros((height, width)), np.ones((height, width)), self.categories,
                              np.array([[0, 0, 0]], np.uint8), (height, width), (height, width))


def _fake_models(name: str, device: str = "cpu", weights=None):
    if name.startswith("broken"):
        raise ModelError(f"{name}: cannot be built")
    return _Labels(name) if is_segmenter(name) else _Boxes()


@pytest.mark.parametrize("running, failing, kept", [
    ("boxes", "broken (fully convolutional)", False),      # a detector, then a segmenter fails: boxes stop
    ("labels (fully convolutional)", "broken_detector", False),    # the reverse
    ("labels (fully convolutional)", "broken (fully convolutional)", True),   # the same task: it runs on
    ("boxes", "broken_detector", True),
])
def test_a_model_that_fails_to_load_keeps_the_previous_only_for_the_same_task(monkeypatch, running, failing, kept):
    """Detection boxes used to go on being drawn while the Task said Segmentation (its controls hidden)."""
    import cnnviewer.engine.segmentation.live as live_models
    monkeypatch.setattr(live_models, "make_live_model", _fake_models)
    results, errors = [], []
    pipeline = LivePipeline(results.append, on_error=errors.append)
    frame = np.zeros((8, 8, 3), np.uint8)

    def show(index: int) -> None:
        pipeline.offer(Frame(index, f"frame {index}", frame, time.perf_counter()))
        pipeline._slot.wait_drained(threading.Event())      # its result (or error) is out

    try:
        pipeline.set_detector(running)
        show(0)
        assert [r.detector.name for r in results] == [running] and errors == []
        pipeline.set_detector(failing)
        show(1)
        show(2)
        assert len(errors) == 1 and errors[0].startswith(f"{failing}: "), errors
        assert [r.frame.index for r in results] == ([0, 1, 2] if kept else [0]), errors
        assert ("nothing runs until a model that loads is chosen" in errors[0]) != kept, errors
        pipeline.set_detector(running)                    # chosen again: it runs again
        show(3)
        assert results[-1].frame.index == 3 and results[-1].detector.name == running
    finally:
        pipeline.close()


def _beyond_the_names() -> tuple[Frame, LiveClassMap]:
    """A 4x4 frame whose right half is class 3 of a model that names only class 0."""
    labels = np.array([[0, 0, 3, 3]] * 4)
    class_map = make_class_map(labels, np.full(labels.shape, 0.5), ("background",), palette(4), (4, 4), (4, 4))
    return Frame(7, "frame 7", np.zeros((4, 4, 3), np.uint8), 0.0), class_map


def test_a_capture_names_a_class_beyond_the_category_list(tmp_path):
    frame, class_map = _beyond_the_names()
    saved = save_capture(tmp_path, frame, class_map, 0.5)
    table = json.loads(saved.with_suffix(".json").read_text())
    assert table["frame"] == 7 and [row["name"] for row in table["classes"]] == ["background", "class 3"]
    assert Image.open(saved).size == (4, 4)
    assert {p.name for p in tmp_path.iterdir()} == {saved.name, saved.with_suffix(".json").name}   # no temporaries


def test_a_capture_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A full disk while the table is written: no truncated JSON, no picture without its table."""
    frame, class_map = _beyond_the_names()

    def full_disk(self, text, *args, **kwargs):
        with open(self, "w") as handle:
            handle.write(text[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(CnnViewerError, match="No space left on device"):
        save_capture(tmp_path, frame, class_map, 0.5)
    assert list(tmp_path.iterdir()) == []
