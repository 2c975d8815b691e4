"""Dataset pictures for small images and labelled exports (new-user trial rows 8 and 30): a 28 px
image is blown up with sharp pixels like its patch, values share one format, and `export
top-patches` names the unit and each image on the picture itself."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image
from skimage import data

from cnnviewer.engine.dataset.display import PICTURE_SIDE, fitted, value_format
from cnnviewer.engine.dataset.sheet import BACKGROUND, elided, _font


def test_a_tiny_image_is_blown_up_with_sharp_pixels_and_a_photo_shrinks():
    tiny = Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28, 3), dtype=np.uint8))
    shown = np.asarray(fitted(tiny, PICTURE_SIDE))
    assert shown.shape == (PICTURE_SIDE, PICTURE_SIDE, 3)
    block = shown[:8, :8].reshape(-1, 3)                 # 224 / 28 = 8: one source pixel, 8 x 8 copies
    assert (block == block[0]).all() and (block[0] == np.asarray(tiny)[0, 0]).all()
    photo = Image.fromarray(data.astronaut()).resize((600, 300))
    assert fitted(photo, PICTURE_SIDE).size == (PICTURE_SIDE, PICTURE_SIDE // 2)


@pytest.mark.parametrize("values, shown", [([0.6, 0.598], ["0.600", "0.598"]), ([12.34, 9.81], ["12.3", "9.8"]),
                                           ([-1.2, -2.104], ["-1.20", "-2.10"])])
def test_values_of_one_list_share_one_format(values, shown):
    assert [format(v, value_format(values)) for v in values] == shown


def test_a_long_name_is_elided_in_the_middle_to_fit():
    font = _font(13)
    name = "wallpapers_CapeTown_at_night_from_the_mountain.jpg"
    short = elided(name, font, 150)
    assert font.getlength(short) <= 150 and "…" in short and short.endswith(".jpg") and short.startswith("wall")
    assert elided("a.png", font, 150) == "a.png"


def test_export_top_patches_of_28px_images_draws_title_values_and_names(tmp_path, capsys, monkeypatch):
    """In-process CLI on Fashion-MNIST-like 28 x 28 images: big tiles, text in the title band and
    under every tile."""
    from cnnviewer.cli import main
    from cnnviewer.engine.dataset import sheet

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    folder = tmp_path / "fm"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera"):
        Image.fromarray(getattr(data, name)()).convert("L").resize((28, 28)).save(folder / f"{name}.png")
    drawn = []
    real = sheet.captions
    monkeypatch.setattr(sheet, "captions", lambda view: drawn.extend(real(view)) or real(view))
    out = tmp_path / "top.png"
    assert main(["export", "top-patches", str(folder), "--layer", "features.14", "--channel", "36", "-k", "4",
                 "-o", str(out)]) == 0
    assert len(drawn) == 4 and {name for _v, name in drawn} <= {f"{n}.png" for n in
                                                                ("astronaut", "chelsea", "coffee", "rocket", "camera")}
    assert len({len(value.split(".")[-1]) for value, _n in drawn}) == 1          # one format
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert pixels.shape[0] > 2 * PICTURE_SIDE and pixels.shape[1] > 2 * PICTURE_SIDE   # not 28 px tiles
    title = pixels[8:26, 8:300]
    assert (np.abs(title - BACKGROUND).sum(axis=2) > 200).sum() > 100         # the title's letters
    below = pixels[40 + PICTURE_SIDE + 10:40 + PICTURE_SIDE + 40, 8:8 + PICTURE_SIDE]
    assert (np.abs(below - BACKGROUND).sum(axis=2) > 200).sum() > 50          # value and name under a tile
    capsys.readouterr()


def test_the_exported_map_keeps_thumbnails_inside_and_has_a_wrapping_legend():
    """Trial row 31: points at the very corners still draw whole framed thumbnails inside a margin;
    the legend names every coloured label (class names) and wraps to a second line."""
    from cnnviewer.engine.dataset.display import PALETTE
    from cnnviewer.engine.dataset.sheet import map_sheet

    rng = np.random.default_rng(0)
    points = np.array([[0, 0], [1, 1], [0, 1], [1, 0]] + rng.random((20, 2)).tolist(), np.float32)
    thumbs = rng.integers(0, 255, (len(points), 64, 64, 3), dtype=np.uint8)
    labels = np.arange(len(points)) % 14                  # more labels than the palette: "other" too
    named = []
    picture = map_sheet(points, thumbs, labels, lambda label: named.append(label) or f"class name {label}",
                        side=400, thumb=40)
    assert picture.shape == (400, 400, 3)
    edge = np.concatenate([picture[:4].reshape(-1, 3), picture[:, :4].reshape(-1, 3), picture[:, -4:].reshape(-1, 3)])
    assert (edge == BACKGROUND).all()                      # nothing touches the top, left or right border
    assert len(set(named)) == len(PALETTE)                 # every swatch has its class's name
    rows_with_swatch = [y for y in range(300, 400) if (picture[y] == PALETTE[-1]).all(axis=1).sum() >= 5]
    first_swatch_rows = [y for y in range(300, 400) if (picture[y] == PALETTE[0]).all(axis=1).sum() >= 5]
    assert rows_with_swatch and first_swatch_rows and min(rows_with_swatch) > max(first_swatch_rows)   # wrapped
    assert (picture[-4:] == BACKGROUND).all()              # the legend's last line is not cut off
