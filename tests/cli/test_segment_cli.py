"""`cnnviewer segment IMAGE --fully-convolutional` (issue 25) with the real MobileNetV2: the overlay at
the image's size, the classes' areas in JSON (a cat and coffee side by side), one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cnnviewer.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


def test_overlay_and_areas_of_a_cat_beside_coffee(tmp_path, capsys):
    both = Image.new("RGB", (800, 300))
    both.paste(Image.fromarray(data.chelsea()).resize((400, 300)), (0, 0))
    both.paste(Image.fromarray(data.coffee()).resize((400, 300)), (400, 0))
    source, out, table = tmp_path / "both.png", tmp_path / "map.png", tmp_path / "map.json"
    both.save(source)
    assert main(["segment", str(source), "--fully-convolutional", "-o", str(out), "--json", str(table)]) == 0, \
        capsys.readouterr().err
    drawn = np.asarray(Image.open(out))
    assert drawn.shape == (300, 800, 3) and not np.array_equal(drawn, np.asarray(both))
    report = json.loads(table.read_text())
    classes = [row["class"] for row in report["classes"]]
    assert sum(row["pixels"] for row in report["classes"]) == 300 * 800
    assert set(classes[:4]) & {281, 282, 283, 284, 285} and set(classes[:4]) & {967, 968, 504}, classes[:6]
    assert all(0.0 < row["mean_probability"] <= 1.0 for row in report["classes"])
    assert report["trained"] is True and report["model"] == "mobilenet_v2"


@pytest.mark.parametrize("extra, words", [([], "needs --fully-convolutional"),
                                          (["--fully-convolutional", "--opacity", "2"], "opacity"),
                                          (["--fully-convolutional", "-o", "/no/such/folder/x.png"], "does not exist")])
def test_errors_are_one_line(tmp_path, capsys, extra, words):
    source = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(source)
    argv = ["segment", str(source), *extra] + ([] if "-o" in extra else ["-o", str(tmp_path / "o.png")])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


TINY_FCN = '''
import torch
from torch import nn


class TinyFCN(nn.Module):
    """A class map (N, 3, h, w) at stride 4, upsampled bilinearly to the input, as FCN does."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 3, 3, stride=2, padding=1))

    def forward(self, x):
        return nn.functional.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.body(x)
'''


def small(pixels: np.ndarray, side: int = 256) -> Image.Image:
    picture = Image.fromarray(pixels)
    return picture.resize((side, round(side * picture.height / picture.width)))


def test_a_folder_gives_one_overlay_per_image_and_one_json(tmp_path, capsys):
    folder, out, table = tmp_path / "photos", tmp_path / "maps", tmp_path / "maps.json"
    folder.mkdir()
    small(data.chelsea()).save(folder / "cat.png")
    small(data.coffee()).save(folder / "coffee.jpg")
    assert main(["segment", str(folder), "--fully-convolutional", "--max-side", "256", "-o", str(out),
                 "--json", str(table)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["cat.png.png", "coffee.jpg.png"]
    report = json.loads(table.read_text())
    assert [row["image"] for row in report["images"]] == ["cat.png", "coffee.jpg"] and report["skipped"] == []
    for row, name in zip(report["images"], ("cat.png", "coffee.jpg")):
        size = Image.open(folder / name).size
        assert Image.open(out / f"{name}.png").size == size
        assert sum(r["pixels"] for r in row["classes"]) == size[0] * size[1]
    assert report["images"][0]["classes"][0]["class"] in {281, 282, 283, 284, 285}      # the cat
    assert report["images"][1]["classes"][0]["class"] in {967, 968, 504}                # espresso or a cup


def tiny_folder(tmp_path: Path, names: tuple[str, ...]) -> Path:
    """64x64 pictures (a 2x2 class map: quick), each a different crop of the cat; 'broken' ones are not images."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(names):
        if "broken" in name:
            (folder / name).write_bytes(b"not an image")
        else:
            crop = data.chelsea()[i * 20:i * 20 + 200, i * 30:i * 30 + 200]
            Image.fromarray(crop).resize((64, 64)).save(folder / name)
    return folder


def run_tiny(folder: Path, out: Path, *extra: str) -> int:
    return main(["segment", str(folder), "--fully-convolutional", "--max-side", "64", "-o", str(out), *extra])


def test_a_folder_never_overwrites_an_overlay_or_its_own_images(tmp_path, capsys):
    """a.jpg and a.png used to both write a.png (one lost); -o the input folder overwrote its a.png."""
    folder = tiny_folder(tmp_path, ("a.jpg", "a.png"))
    out = tmp_path / "maps"
    assert run_tiny(folder, out) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.png", "a.png.png"]
    assert not np.array_equal(np.asarray(Image.open(out / "a.jpg.png")), np.asarray(Image.open(out / "a.png.png")))
    before = (folder / "a.png").read_bytes()
    capsys.readouterr()
    for same in (folder, folder / "."):
        assert run_tiny(folder, same) == 2
        err = capsys.readouterr().err.strip()
        assert "is the input folder" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "a.png"] and (folder / "a.png").read_bytes() == before


def test_an_unreadable_image_of_a_folder_is_skipped_said_and_recorded(tmp_path, capsys):
    folder = tiny_folder(tmp_path, ("a-broken.png", "b.png", "c-broken.jpg", "d.png"))
    out, table = tmp_path / "maps", tmp_path / "maps.json"
    assert run_tiny(folder, out, "--json", str(table)) == 0, capsys.readouterr().err
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 2 and "a-broken.png" in warnings[0] and "c-broken.jpg" in warnings[1], warnings
    assert sorted(p.name for p in out.iterdir()) == ["b.png.png", "d.png.png"]
    report = json.loads(table.read_text())
    assert [row["image"] for row in report["images"]] == ["b.png", "d.png"]
    assert [entry["file"] for entry in report["skipped"]] == ["a-broken.png", "c-broken.jpg"]
    assert all("Pillow" in entry["reason"] for entry in report["skipped"]), report["skipped"]


def test_a_folder_with_no_readable_image_fails_in_one_line(tmp_path, capsys):
    folder = tiny_folder(tmp_path, ("a-broken.png", "b-broken.png"))
    assert run_tiny(folder, tmp_path / "maps", "--json", "-") == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1, err
    assert "no readable image in photos: a-broken.png" in err and "(and 1 more)" in err, err


def test_a_video_gives_a_class_table_per_frame(tmp_path, capsys):
    from tests.media import astronaut_frame, write_video

    video = write_video(tmp_path / "clip.avi", [astronaut_frame(i)[0] for i in range(3)])
    out = tmp_path / "frames"
    assert main(["segment", str(video), "--fully-convolutional", "--max-side", "224", "-o", str(out),
                 "--json", "-", "--max-frames", "2"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["video"] == str(video) and [row["frame"] for row in report["frames"]] == [0, 1]
    assert sorted(p.name for p in out.iterdir()) == ["frame-00000.png", "frame-00001.png"]
    assert all(sum(r["pixels"] for r in row["classes"]) == 640 * 480 for row in report["frames"])
    assert report["frames"][0]["classes"] != report["frames"][1]["classes"]        # the astronaut moved


def test_a_model_whose_output_is_a_class_map_runs_on_its_crop(tmp_path, capsys):
    """--model FILE.py:NAME with a (N, K, h, w) output (random weights): the overlay is the 224-px crop."""
    (tmp_path / "nets.py").write_text(TINY_FCN)
    source, out = tmp_path / "cat.png", tmp_path / "map.png"
    small(data.chelsea(), 320).save(source)
    assert main(["segment", str(source), "--model", f"{tmp_path / 'nets.py'}:TinyFCN", "-o", str(out),
                 "--json", "-"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["map"] == [224, 224] and report["on"] == "the model's centre crop"
    assert Image.open(out).size == (224, 224) and sum(r["pixels"] for r in report["classes"]) == 224 * 224
    assert report["crop"][1] > 0 and report["crop"][3] < 1       # a landscape image: the crop is its middle
    assert main(["segment", str(source), "--model", f"{tmp_path / 'nets.py'}:TinyClassifier", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs --fully-convolutional" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("make, words", [("empty", "no images in this folder"), ("broken", "broken.png"),
                                         ("file-as-output", "is a file")])
def test_folder_errors_are_one_line(tmp_path, capsys, make, words):
    folder = tmp_path / "photos"
    folder.mkdir()
    out = tmp_path / "maps"
    if make == "broken":
        (folder / "broken.png").write_bytes(b"not a png")
    if make == "file-as-output":
        small(data.chelsea()).save(folder / "cat.png")
        out.write_text("x")
    assert main(["segment", str(folder), "--fully-convolutional", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


def expected_box(x0, y0, x1, y1, width, height, side=448):
    """Image pixels -> fractions of the fully convolutional model's 448-px centre square, worked out here:
    the short side scaled to 448, the square cut from the middle."""
    scale = side / min(width, height)
    dx, dy = (width * scale - side) / 2, (height * scale - side) / 2
    return ((y0 * scale - dy) / side, (x0 * scale - dx) / side, (y1 * scale - dy) / side, (x1 * scale - dx) / side)


def test_export_gradients_of_a_region_is_the_engines_box_target(tmp_path, capsys):
    from cnnviewer.engine.attribution.target import Target
    from cnnviewer.engine.media.images import load_image
    from cnnviewer.engine.models.loading import load_model
    from cnnviewer.engine.segmentation.fully_convolutional import fully_convolutional_model
    from cnnviewer.engine.workbench import Workbench

    source = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(source)                   # 451 × 300
    npy, png = tmp_path / "g.npy", tmp_path / "g.png"
    assert main(["export", "gradients", str(source), "--method", "grad-cam", "--fully-convolutional",
                 "--region", "100", "20", "250", "170", "--target-class", "285", "-o", str(png),
                 "--npy", str(npy)]) == 0, capsys.readouterr().err
    assert "class 285 (Egyptian cat) over a box" in capsys.readouterr().out
    model = fully_convolutional_model(load_model("mobilenet_v2"))
    image = load_image(source)
    box = expected_box(100, 20, 250, 170, 451, 300)
    workbench = Workbench()
    ours = workbench.gradient(model, image, "grad-cam", Target(class_index=285, box=box)).attribution[0]
    np.testing.assert_allclose(np.load(npy), ours, rtol=1e-5, atol=1e-6)
    whole = workbench.gradient(model, image, "grad-cam", Target(class_index=285)).attribution[0]
    assert not np.allclose(whole, ours, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("extra, words", [
    (["--fully-convolutional", "--region", "200", "50", "100", "90"], "X1 must exceed X0"),
    (["--fully-convolutional", "--region", "0", "0", "60", "90"], "outside the model's centre crop"),
    (["--fully-convolutional", "--region", "100", "0", "500", "90"], "outside the 451×300 image"),
    (["--region", "100", "20", "250", "170"], "needs a class map"),
])
def test_export_gradients_region_errors_are_one_line(tmp_path, capsys, extra, words):
    source = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(source)
    assert main(["export", "gradients", str(source), "--method", "saliency", *extra,
                 "-o", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


def test_a_region_without_a_class_explains_the_class_the_region_shows(tmp_path, capsys):
    """As a box dragged in the window: the coffee half of a cat|coffee picture is explained as coffee,
    though the whole map's top class may be the cat (real MobileNetV2)."""
    both = Image.new("RGB", (600, 300))
    both.paste(Image.fromarray(data.chelsea()).resize((300, 300)), (0, 0))
    both.paste(Image.fromarray(data.coffee()).resize((300, 300)), (300, 0))
    source = tmp_path / "both.png"
    both.save(source)
    assert main(["export", "gradients", str(source), "--method", "grad-cam", "--fully-convolutional",
                 "--region", "330", "60", "440", "240", "-o", str(tmp_path / "g.png")]) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert any(f"class {index} (" in said for index in (967, 968, 504)), said


def test_a_segmentation_network_is_not_made_fully_convolutional(capsys):
    """It already gives a class map (random-init LR-ASPP: its weights do not matter here)."""
    from cnnviewer.engine.errors import ModelError
    from cnnviewer.engine.models.loading import load_model
    from cnnviewer.engine.segmentation.fully_convolutional import fully_convolutional, fully_convolutional_model

    segmenter = load_model("lraspp_mobilenet_v3_large")
    with pytest.raises(ModelError, match="already gives a class map"):
        fully_convolutional(segmenter)
    with pytest.raises(ModelError, match="already gives a class map"):
        fully_convolutional(fully_convolutional_model(load_model("mobilenet_v2")))
