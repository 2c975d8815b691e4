"""Every subcommand x every kind of bad file: exit 2, one line on stderr, no traceback, no hang.

Run in-process (cnnviewer.cli.main) so a hundred cases cost seconds, not a torch import each;
each case has a deadline, so a blocking read (a FIFO) fails the test instead of hanging the suite. The subprocess tests in test_cli.py cover the real entry point.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from cnnviewer.cli import main
from tests.bad_files import bad_images, bad_labels, bad_weights

DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("hostile")
    photo = root / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(photo)
    return {"image": bad_images(root / "images"), "weights": bad_weights(root / "weights"),
            "labels": bad_labels(root / "labels"), "photo": {"chelsea": photo}, "out": {"dir": root / "out"}}


class Hung(Exception):
    """The deadline passed: the command blocked (a FIFO read, a lock)."""


def call(argv: list[str]) -> int:
    """cnnviewer.cli.main(argv) on this (the main) thread, with a SIGALRM deadline.

    The main thread, because `export` draws with Qt, whose application must live there;
    the alarm interrupts a blocking open() or read(), so a hang fails the test.
    """
    def expire(_signum, _frame):
        raise Hung(f"hung: cnnviewer {' '.join(argv)}")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_S)
    try:
        return int(main(argv))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


IMAGE_COMMANDS = {
    "predict": ["predict", "{image}"],
    "export feature-maps": ["export", "feature-maps", "{image}", "-o", "{out}/f.png", "--layer", "features.3"],
    "export filters": ["export", "filters", "{image}", "-o", "{out}/k.png"],
    "export receptive-field": ["export", "receptive-field", "{image}", "-o", "{out}/r.png", "--layer", "features.3"],
    "export gradients": ["export", "gradients", "{image}", "--method", "saliency", "-o", "{out}/g.png"],
    "detect": ["detect", "{image}"],
    "synthesize style": ["synthesize", "--method", "style", "--content", "{image}", "--style", "{image}", "--steps",
                         "1", "--size", "64", "-o", "{out}/s.png"],
}
WEIGHT_COMMANDS = {
    "predict": ["predict", "{photo}", "--weights", "{weights}"],
    "export model-summary": ["export", "model-summary", "-o", "{out}/s.png", "--weights", "{weights}"],
    "export gradients": ["export", "gradients", "{photo}", "--method", "saliency", "-o", "{out}/g.png",
                         "--weights", "{weights}"],
    "summary": ["summary", "--weights", "{weights}"],
    "detect": ["detect", "{photo}", "--detector", "ssdlite320_mobilenet_v3_large", "--weights", "{weights}"],
}
LABEL_COMMANDS = {
    "predict": ["predict", "{photo}", "--labels", "{labels}"],
    "export gradients": ["export", "gradients", "{photo}", "--method", "saliency", "-o", "{out}/g.png",
                         "--labels", "{labels}"],
}


def check_refused(argv: list[str], capsys, out: Path) -> None:
    out.mkdir(exist_ok=True)
    before = sorted(out.iterdir())
    rc = call(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2, f"exit {rc}: cnnviewer {' '.join(argv)}\n{captured.out}{captured.err}"
    assert len(lines) == 1, f"stderr of cnnviewer {' '.join(argv)}:\n{captured.err}"
    assert lines[0].startswith("error: ") and "Traceback" not in captured.err
    assert sorted(out.iterdir()) == before, "a refused command left a file behind"


KINDS_OF_IMAGE = ["empty", "text", "truncated", "bomb", "weights-as-image", "missing", "folder", "fifo"]
KINDS_OF_WEIGHTS = ["empty", "text", "truncated-zip", "empty-safetensors", "corrupt-safetensors", "fake-pt2",
                    "evil-pickle", "fits-nothing", "image-as-weights", "missing", "folder", "fifo"]


@pytest.mark.parametrize("command", list(IMAGE_COMMANDS))
def test_bad_images_are_refused_by_every_subcommand(files, capsys, monkeypatch, command):
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    for kind in KINDS_OF_IMAGE:
        if kind not in files["image"]:
            continue
        argv = [a.format(image=files["image"][kind], out=files["out"]["dir"]) for a in IMAGE_COMMANDS[command]]
        check_refused(argv, capsys, files["out"]["dir"])


@pytest.mark.parametrize("command", list(WEIGHT_COMMANDS))
def test_bad_weights_are_refused_by_every_subcommand(files, capsys, monkeypatch, command):
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    for kind in KINDS_OF_WEIGHTS:
        if kind not in files["weights"]:
            continue
        argv = [a.format(weights=files["weights"][kind], photo=files["photo"]["chelsea"], out=files["out"]["dir"])
                for a in WEIGHT_COMMANDS[command]]
        check_refused(argv, capsys, files["out"]["dir"])


@pytest.mark.parametrize("command", list(LABEL_COMMANDS))
def test_bad_labels_are_refused(files, capsys, monkeypatch, command):
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    for kind, path in files["labels"].items():
        argv = [a.format(labels=path, photo=files["photo"]["chelsea"], out=files["out"]["dir"])
                for a in LABEL_COMMANDS[command]]
        check_refused(argv, capsys, files["out"]["dir"])


@pytest.mark.parametrize("argv", [
    ["detect", "{photo}", "--score", "nan"],
    ["detect", "{photo}", "--score", "1.5"],
    ["detect", "{photo}", "--iou", "-0.1"],
    ["detect", "{photo}", "--detector", "no_such_detector"],
    ["predict", "{photo}", "--top", "0"],
    ["export", "feature-maps", "{photo}", "-o", "{out}/x.png", "--layer", "features.3", "--channel", "99999"],
    ["export", "gradients", "{photo}", "--method", "grad-cam", "--layer", "no.such", "-o", "{out}/x.png"],
    ["summary", "--model", "not_a_model"],
    ["models", "--family", "nope"],
    ["synthesize", "--method", "style", "--content", "{photo}", "--style", "{photo}", "--backbone", "model",
     "--content-layer", "no.such", "--style-layers", "features.2", "--steps", "1", "-o", "{out}/x.png"],
    ["synthesize", "--method", "style", "--content", "{photo}", "--style", "{photo}", "--backbone", "vgg19",
     "--steps", "1", "-o", "{out}/x.png"],     # no VGG weights on disk: told where they go
])
def test_bad_arguments_are_refused(files, capsys, monkeypatch, argv):
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    check_refused([a.format(photo=files["photo"]["chelsea"], out=files["out"]["dir"]) for a in argv], capsys,
                  files["out"]["dir"])


@pytest.mark.parametrize("name, use", [
    ("lraspp_mobilenet_v3_large", "segment SOURCE --model lraspp_mobilenet_v3_large"),
    ("mobilenet_v2 (fully convolutional)", "segment SOURCE --fully-convolutional --model mobilenet_v2")])
def test_detect_refuses_a_segmentation_model(files, capsys, monkeypatch, name, use):
    """It used to run and print '0 detections' for every frame: a segmenter finds no boxes."""
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    check_refused(["detect", str(files["photo"]["chelsea"]), "--detector", name], capsys, files["out"]["dir"])
    assert main(["detect", str(files["photo"]["chelsea"]), "--detector", name]) == 2
    err = capsys.readouterr().err
    assert "is a segmentation model" in err and use in err, err
