"""The command line as a user runs it: real processes, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from skimage import data


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CNNVIEWER_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "cnnviewer", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = {"chelsea": folder / "chelsea.jpg", "coffee": folder / "coffee.png"}
    Image.fromarray(data.chelsea()).save(paths["chelsea"])
    Image.fromarray(data.coffee()).save(paths["coffee"])
    return paths


def test_predict_prints_the_top5(photos):
    result = run("predict", str(photos["chelsea"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "mobilenet_v2" in lines[0] and "offline weights pack" in lines[0]
    assert len(lines) == 6
    assert "cat" in lines[1]


def test_predict_json(photos):
    result = run("predict", str(photos["coffee"]), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [set(row) for row in rows] == [{"label", "index", "probability", "trained"}] * 5
    assert all(row["trained"] for row in rows) and "warning" not in result.stderr
    assert rows[0]["label"] == "espresso" and rows[0]["index"] == 967
    assert rows[0]["probability"] > 0.5
    assert [r["probability"] for r in rows] == sorted((r["probability"] for r in rows), reverse=True)


def test_predict_with_inferred_architecture_and_labels(photos, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "net.pth"
    torch.save({"model_state_dict": torchvision.models.resnet18(num_classes=3).state_dict(), "epoch": 9}, weights)
    (tmp_path / "labels.txt").write_text("apple\nbanana\ncherry\n")
    result = run("predict", str(photos["chelsea"]), "--weights", str(weights), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and {r["label"] for r in rows} == {"apple", "banana", "cherry"}


@pytest.mark.parametrize("panel", ["predictions", "feature-maps", "filters", "model-summary", "receptive-field"])
def test_export_writes_png(photos, tmp_path, panel):
    out = tmp_path / f"{panel}.png"
    result = run("export", panel, str(photos["chelsea"]), "-o", str(out), "--layer", "features.3",
                 "--channel", "2", "--size", "800", "600")
    assert result.returncode == 0, result.stderr
    image = Image.open(out)
    assert image.size == (800, 600)
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50   # something real was drawn


@pytest.mark.parametrize("args, fragment", [
    (("predict", "/no/such/photo.jpg"), "no such file"),
    (("predict", "{text}"), "not an image"),
    (("predict", "{photo}", "--weights", "{text_weights}"), "not a weights file"),
    (("predict", "{photo}", "--model", "not_a_model"), "unknown model"),
    (("predict", "{photo}", "--weights", "{pickle}"), "--trust"),
    (("export", "teapot", "{photo}", "-o", "x.png"), "invalid choice"),
    (("export", "filters", "{photo}", "-o", "x.png", "--layer", "nope"), "no layer"),
    (("predict",), "required"),
    (("export", "receptive-field", "{photo}", "-o", "x.png"), "needs --layer"),
    (("predict", "{photo}", "--model", "{nets}:Broken"), "cannot run"),
    (("predict", "{photo}", "--precision", "fp16", "--device", "cpu"), "needs a GPU"),
    (("export", "feature-maps", "{photo}", "-o", "x.png", "--layer", "features.3", "--channel", "500"),
     "out of range"),
    (("export", "receptive-field", "{photo}", "-o", "x.png", "--layer", "classifier.1"), "no spatial map"),
    (("detect", "{photo}", "--detector", "ssdlite320_mobilenet_v3_large", "--weights", "{pickle}"),
     "needs a state dict"),
    (("predict", "{fifo}"), "not a regular file"),                       # a FIFO would block for ever
    (("detect", "{fifo}"), "not a regular file"),
    (("predict", "{photo}", "--labels", "{fifo}"), "not a regular file"),
    (("predict", "{photo}", "--weights", "{fifo}"), "not a file"),
    (("export", "filters", "{photo}", "-o", "x.png", "--size", "60000", "60000"), "out of range"),
    (("summary", "--input-size", "20000", "20000"), "out of range"),
    (("export", "gradients", "{photo}", "--method", "occlusion", "--stride", "-3", "-o", "x.png"), "out of range"),
    (("export", "gradients", "{photo}", "--method", "saliency", "--target-class", "-1", "-o", "x.png"),
     "out of range"),
    (("export", "gradients", "{photo}", "--method", "saliency", "--layer", "features.3", "--channel", "-2",
      "-o", "x.png"), "out of range"),
])
def test_bad_input_is_one_line_and_exit_2(photos, tmp_path, args, fragment):
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    text_weights = tmp_path / "notes.pth"
    text_weights.write_text("hello")
    pickle = tmp_path / "model.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), pickle)
    nets = tmp_path / "nets.py"
    nets.write_text("import torch.nn as nn\nclass Broken(nn.Module):\n    def __init__(self):\n"
                    "        super().__init__()\n        self.fc = nn.Linear(5, 2)\n"
                    "    def forward(self, x):\n        return self.fc(x)\n")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    names = {"text": text, "photo": photos["chelsea"], "text_weights": text_weights, "pickle": pickle,
             "nets": nets, "fifo": fifo}
    result = run(*(a.format(**names) for a in args))
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_trusted_pickle_loads(photos, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "whole.pth"
    torch.save(torchvision.models.squeezenet1_1(num_classes=4), path)
    result = run("predict", str(photos["chelsea"]), "--weights", str(path), "--trust", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 4


def test_summary_json_csv_and_text():
    result = run("summary", "--model", "resnet18", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {"name", "type", "output_shape", "params", "macs", "rf_size", "rf_jump", "rf_start"} <= set(rows[0])
    assert sum(r["params"] + r["bias_params"] for r in rows) == 11_689_512
    conv1 = rows[0]
    assert (conv1["name"], conv1["output_shape"], conv1["rf_size"], conv1["rf_jump"]) == \
        ("conv1", [64, 112, 112], [7, 7], [2, 2])
    csv_result = run("summary", "--model", "resnet18", "--csv", "--input-size", "64", "64")
    lines = csv_result.stdout.strip().splitlines()
    assert lines[0].startswith("name,type,output_shape") and lines[1].startswith("conv1,Conv2d,64x32x32,")
    text = run("summary")
    assert "mobilenet_v2" in text.stdout and "total" in text.stdout and "whole image" in text.stdout


@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_export_architecture_without_an_image(tmp_path, suffix):
    out = tmp_path / f"arch.{suffix}"
    result = run("export", "architecture", "--model", "resnet18", "-o", str(out))
    assert result.returncode == 0, result.stderr
    if suffix == "svg":
        text = out.read_text()
        assert "<svg" in text and "layer4" in text
    else:
        assert Image.open(out).size[1] > 1000


def test_export_gradients_png_and_npy(photos, tmp_path):
    import numpy as np

    out, raw = tmp_path / "sal.png", tmp_path / "sal.npy"
    result = run("export", "gradients", str(photos["chelsea"]), "--method", "saliency", "-o", str(out),
                 "--npy", str(raw))
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (224, 224)
    values = np.load(raw)
    assert values.shape == (224, 224, 3) and values.dtype == np.float32 and values.min() >= 0
    cam = tmp_path / "cam.npy"
    result = run("export", "gradients", str(photos["chelsea"]), "--method", "grad-cam", "--layer", "features.6",
                 "--channel", "2", "--neuron", "5", "5", "-o", str(tmp_path / "cam.png"), "--npy", str(cam))
    assert result.returncode == 0, result.stderr
    assert np.load(cam).shape == (224, 224)
    assert "grad-cam of features.6" in result.stdout and "at layer features.6 (auto)" in result.stdout
    bad = run("export", "gradients", str(photos["chelsea"]), "--method", "saliency", "--layer", "nope",
              "-o", str(out))
    assert bad.returncode == 2 and "no layer" in bad.stderr


def test_grad_cam_names_its_layer_the_last_map_before_pooling(photos, tmp_path):
    """EfficientNet-B0 (random initialisation offline: the layer depends on the wiring only): its
    squeeze-and-excitation gates used to make Grad-CAM fall back to an early 112x112 layer."""
    out = tmp_path / "cam.png"
    result = run("export", "gradients", str(photos["chelsea"]), "--method", "grad-cam", "--model",
                 "efficientnet_b0", "--target-class", "281", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ms") and "at layer features.8.2 (auto)" in result.stdout
    chosen = run("export", "gradients", str(photos["chelsea"]), "--method", "grad-cam", "--cam-layer",
                 "features.10", "-o", str(out))
    assert chosen.returncode == 0, chosen.stderr
    assert "at layer features.10 in" in chosen.stdout


def test_detect_folder_json_and_frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "0001.png")
    Image.fromarray(data.coffee()).save(folder / "0002.png")
    out, annotated = tmp_path / "det.json", tmp_path / "annotated"
    result = run("detect", str(folder), "--json", str(out), "--save-frames", str(annotated))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("0001.png: 1 detection: face")
    assert result.stdout.splitlines()[1] == "0002.png: 0 detections"
    records = json.loads(out.read_text())
    assert len(records) == 1 and records[0]["file_name"] == "0001.png"
    assert sorted(p.name for p in annotated.iterdir()) == ["0001.png", "0002.png"]
    bad = run("detect", str(tmp_path / "nothing"))
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_detect_video_file_per_frame(tmp_path, astronaut_clip):
    out = tmp_path / "video.json"
    result = run("detect", str(astronaut_clip.video), "--score", "0.9", "--json", str(out),
                 "--save-frames", str(tmp_path / "frames"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 12 and lines[0].startswith("astronaut.mp4#0: 1 detection: face")
    assert all(line.split(": ")[1] == ("1 detection" if i < 6 else "2 detections") for i, line in enumerate(lines))
    assert len(json.loads(out.read_text())) == 6 + 2 * 6
    assert (tmp_path / "frames" / "astronaut-000011.png").exists()
    bad = run("detect", str(astronaut_clip.video), "--detector", "ssdlite320_mobilenet_v3_large",
              "--weights", str(tmp_path / "video.json"))
    assert bad.returncode == 2 and "video.json" in bad.stderr


@pytest.mark.parametrize("argv", [["--help"], ["predict", "--help"], ["export", "--help"],
                                  ["export", "gradients", "--help"], ["summary", "--help"], ["detect", "--help"],
                                  ["models", "--help"], ["install-desktop", "--help"], ["compare", "--help"],
                                  ["index", "--help"], ["top", "--help"], ["neighbours", "--help"], ["predict"]])
def test_help_and_usage_errors_load_neither_torch_nor_qt(argv):
    """Each subcommand imports what it uses only when it runs: --help and bad arguments answer at once."""
    code = ("import sys\nfrom cnnviewer.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'PySide6') if m in sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr


@pytest.mark.parametrize("argv, said", [(["evalute"], "unknown command 'evalute'; did you mean 'evaluate'?"),
                                        (["sumary", "--help"], "unknown command 'sumary'; did you mean 'summary'?"),
                                        (["xyzzy"], "unknown command 'xyzzy'; commands: ablate-rank, compare, detect"),
                                        (["predit", "cat.png"], "unknown command 'predit'; did you mean 'predict'?"),
                                        (["exprot"], "did you mean 'export'?")])
def test_a_mistyped_command_is_named_not_opened_as_an_image(argv, said, capsys, monkeypatch, tmp_path):
    from cnnviewer.cli import gui, main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gui, "run", lambda *_a: pytest.fail("the window was started"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1, err


def test_a_file_named_like_a_command_still_opens(capsys, monkeypatch, tmp_path):
    from cnnviewer.cli import gui, main
    monkeypatch.chdir(tmp_path)
    Image.fromarray(data.chelsea()).save(tmp_path / "evalute", format="PNG")
    monkeypatch.setattr(gui, "run", lambda args, _started: 7 if args.image == "evalute" else 0)
    assert main(["evalute"]) == 7


def test_json_of_an_untrained_model_says_so(photos, capsys):
    from cnnviewer.cli import main
    assert main(["predict", str(photos["chelsea"]), "--model", "resnet18", "--json"]) == 0
    out, err = capsys.readouterr()
    assert all(row["trained"] is False for row in json.loads(out))
    assert "cnnviewer: warning: resnet18" in err and "untrained" in err


def test_weights_of_another_architecture_than_the_named_model_are_refused(photos, tmp_path):
    """--model names one architecture, the file fits another: say which, instead of silently switching."""
    torch.manual_seed(0)
    weights = tmp_path / "small.pth"
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=3).state_dict(), weights)
    result = run("predict", str(photos["chelsea"]), "--model", "squeezenet1_1", "--weights", str(weights))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "holds mobilenet_v3_small weights, not squeezenet1_1" in result.stderr
    assert run("predict", str(photos["chelsea"]), "--weights", str(weights)).returncode == 0   # no --model: fine


@pytest.mark.parametrize("args", [
    ("export", "gradients", "{photo}", "--method", "saliency", "-o", "{missing}/g.png"),
    ("export", "gradients", "{photo}", "--method", "saliency", "-o", "{ok}/g.png", "--npy", "{missing}/g.npy"),
    ("export", "filters", "{photo}", "-o", "{missing}/f.png"),
    ("export", "architecture", "-o", "{missing}/a.svg"),
    ("detect", "{photo}", "--json", "{missing}/d.json"),
    ("export", "filters", "{photo}", "-o", "{ok}"),
])
def test_outputs_that_cannot_be_written_are_refused_before_the_work(photos, tmp_path, args):
    """Checked first, in one line; and nothing half-written is left under the real name."""
    names = {"photo": photos["chelsea"], "missing": tmp_path / "no" / "such", "ok": tmp_path}
    result = run(*(a.format(**names) for a in args))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and ("does not exist" in result.stderr or "is a folder" in result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_outputs_are_complete_files_with_the_usual_permissions(photos, tmp_path):
    out = tmp_path / "arch.svg"
    assert run("export", "architecture", "-o", str(out)).returncode == 0
    assert out.read_text().rstrip().endswith("</svg>") and oct(out.stat().st_mode & 0o777) != oct(0o600)
    assert [p.name for p in tmp_path.iterdir()] == ["arch.svg"]             # no temporary file left


def test_long_work_shows_progress_on_a_terminal_and_stops_cleanly_on_ctrl_c(photos, tmp_path):
    """Occlusion at stride 1: a progress bar on a terminal's stderr; Ctrl+C exits 130 leaving no file."""
    import pty
    import select
    import signal
    import time

    out = tmp_path / "occlusion.png"
    leader, follower = pty.openpty()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CNNVIEWER_OFFLINE="1")
    process = subprocess.Popen([sys.executable, "-m", "cnnviewer", "export", "gradients", str(photos["chelsea"]),
                                "--method", "occlusion", "--stride", "1", "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    seen, deadline = b"", time.monotonic() + 120
    try:
        while b"occlusion:" not in seen and time.monotonic() < deadline:
            if select.select([leader], [], [], 1.0)[0]:
                seen += os.read(leader, 4096)
        assert b"occlusion:" in seen and b"[#" in seen or b"[-" in seen, seen
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
        while select.select([leader], [], [], 0.5)[0]:
            try:
                seen += os.read(leader, 4096)
            except OSError:
                break
    finally:
        process.kill()
        os.close(leader)
    text = seen.decode(errors="replace")
    assert text.rstrip().endswith("cnnviewer: interrupted") and "Traceback" not in text
    assert not out.exists() and list(tmp_path.iterdir()) == []      # nothing half-written


def test_warnings_are_one_line_and_pillow_bomb_notice_is_not_shown(tmp_path):
    """A 95-megapixel image (under the app's own limit) predicts without Pillow's warning."""
    big = tmp_path / "big.png"
    Image.new("RGB", (10000, 9500), (120, 30, 40)).save(big, compress_level=1)
    result = run("predict", str(big))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_plain_launch_does_not_import_timm(tmp_path):
    """timm is imported only when a timm model is asked for or listed, never by a launch."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CNNVIEWER_OFFLINE="1", CNNVIEWER_LAUNCH_PROBE="1",
               HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = subprocess.run([sys.executable, "-m", "cnnviewer"], capture_output=True, text=True, timeout=120, env=env)
    probe = next((line for line in done.stdout.splitlines() if "first_predictions_s=" in line), "")
    assert "timm_loaded=False" in probe and "torch_in_gui_thread_at_show=False" in probe, done.stdout + done.stderr
