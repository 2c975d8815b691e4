"""Loading user images: every format, mode and failure ends as RGB uint8 or one ImageError."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnviewer.engine.errors import ImageError
from cnnviewer.engine.media import images
from cnnviewer.engine.media.images import InputImage, load_image, sample_image

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def quadrants(width: int = 32, height: int = 16) -> np.ndarray:
    """(H, W, 3) uint8: red top-left, green top-right, blue bottom-left, white bottom-right."""
    pixels = np.full((height, width, 3), 255, dtype=np.uint8)
    pixels[: height // 2, : width // 2] = RED
    pixels[: height // 2, width // 2:] = GREEN
    pixels[height // 2:, : width // 2] = BLUE
    return pixels


def assert_rgb(image: InputImage, shape: tuple[int, int, int]) -> None:
    pixels = image.pixels
    assert isinstance(image, InputImage)
    assert pixels.shape == shape
    assert pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous
    assert not pixels.flags.writeable


def assert_error_names(path: Path, match: str | None = None) -> str:
    with pytest.raises(ImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert path.name in message
    assert "\n" not in message
    if match is not None:
        assert match in message
    return message


# --------------------------------------------------------------------------- formats

@pytest.mark.parametrize(("suffix", "options"), [
    (".png", {}),
    (".bmp", {}),
    (".tif", {}),
    (".tiff", {"compression": "tiff_lzw"}),
    (".webp", {"lossless": True}),
])
def test_lossless_formats_round_trip_exactly(tmp_path: Path, suffix: str, options: dict) -> None:
    pixels = quadrants()
    path = tmp_path / f"picture{suffix}"
    Image.fromarray(pixels).save(path, **options)

    image = load_image(path)

    assert_rgb(image, (16, 32, 3))
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.original_size == (32, 16)
    assert image.source == str(path)
    assert image.name == path.name


def test_jpeg_loads_close_to_original(tmp_path: Path) -> None:
    pixels = quadrants(64, 32)
    path = tmp_path / "photo.jpeg"
    Image.fromarray(pixels).save(path, quality=95)

    image = load_image(path)

    assert_rgb(image, (32, 64, 3))
    # Quadrant centres survive JPEG almost exactly.
    for (y, x), colour in {(8, 16): RED, (8, 48): GREEN, (24, 16): BLUE, (24, 48): (255,) * 3}.items():
        assert np.abs(image.pixels[y, x].astype(int) - colour).max() <= 8


def test_gif_gives_first_frame_of_animation(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    first = Image.new("RGB", (10, 6), RED)
    second = Image.new("RGB", (10, 6), BLUE)
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 2

    image = load_image(path)

    assert_rgb(image, (6, 10, 3))
    assert (image.pixels == RED).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 32 wide x 16 high, Orientation=6: shown rotated 90 degrees clockwise.
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(quadrants(32, 16)).save(path, exif=exif, quality=95)

    image = load_image(path)

    assert_rgb(image, (32, 16, 3))
    assert image.original_size == (16, 32)
    # Clockwise: stored top-left (red) goes top-right, bottom-left (blue) goes top-left.
    def near(y: int, x: int, colour: tuple[int, int, int]) -> bool:
        return np.abs(image.pixels[y, x].astype(int) - colour).max() <= 8
    assert near(4, 12, RED)
    assert near(4, 4, BLUE)
    assert near(28, 12, GREEN)
    assert near(28, 4, (255, 255, 255))


# --------------------------------------------------------------------------- modes

def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    gray = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)

    image = load_image(path)

    assert_rgb(image, (4, 6, 3))
    np.testing.assert_array_equal(image.pixels, np.repeat(gray[..., None], 3, axis=2))


def test_palette_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    palette_image = Image.fromarray(quadrants()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette_image.save(path)
    with Image.open(path) as check:
        assert check.mode == "P"

    image = load_image(path)

    assert_rgb(image, (16, 32, 3))
    np.testing.assert_array_equal(image.pixels, quadrants())


def test_palette_with_transparency_composites_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "transparent.gif"
    palette_image = Image.new("P", (4, 2), 0)
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.putpixel((0, 0), 1)
    palette_image.save(path, transparency=0)

    image = load_image(path)

    assert_rgb(image, (2, 4, 3))
    assert tuple(image.pixels[0, 0]) == BLUE
    assert tuple(image.pixels[1, 3]) == (255, 255, 255)


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    cmyk = Image.new("CMYK", (8, 8), (255, 0, 0, 0))   # pure cyan
    cmyk.save(path, quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"

    image = load_image(path)

    assert_rgb(image, (8, 8, 3))
    assert np.abs(image.pixels[4, 4].astype(int) - (0, 255, 255)).max() <= 8


def test_rgba_composites_alpha_onto_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 255          # red everywhere
    rgba[0, :, 3] = 255         # opaque top row
    rgba[1, 0, 3] = 0           # transparent
    rgba[1, 1, 3] = 128         # half
    rgba[1, 2, 3] = 255
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)

    image = load_image(path)

    assert_rgb(image, (2, 3, 3))
    assert (image.pixels[0] == RED).all()
    assert tuple(image.pixels[1, 0]) == (255, 255, 255)
    assert image.pixels[1, 1, 0] == 255 and 125 <= image.pixels[1, 1, 1] <= 129
    assert tuple(image.pixels[1, 2]) == RED


def test_16_bit_png_is_scaled_by_its_full_range(tmp_path: Path) -> None:
    deep = np.array([[1000, 2000], [3000, 65000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")

    image = load_image(path)

    assert_rgb(image, (2, 2, 3))
    channel = image.pixels[..., 0]
    assert channel[0, 0] == round(1000 / 257) and channel[1, 1] == round(65000 / 257)
    assert channel[0, 0] < channel[0, 1] < channel[1, 0] < channel[1, 1]
    assert (image.pixels == channel[..., None]).all()


def test_huge_image_is_downscaled_to_max_side(tmp_path: Path) -> None:
    path = tmp_path / "panorama.png"
    Image.new("RGB", (images.MAX_SIDE + 904, 100), GREEN).save(path)

    image = load_image(path)

    height, width, _ = image.pixels.shape
    assert width == images.MAX_SIDE
    assert height in (81, 82)   # aspect ratio kept
    assert image.original_size == (images.MAX_SIDE + 904, 100)
    assert image.pixels.dtype == np.uint8 and image.pixels.flags.c_contiguous
    assert (image.pixels[height // 2, width // 2] == GREEN).all()


# --------------------------------------------------------------------------- failures

def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (20, 20)).save(path)   # 400 pixels
    limit_before = Image.MAX_IMAGE_PIXELS

    monkeypatch.setattr(images, "MAX_PIXELS", 300)    # over the limit: Pillow warns -> error
    assert_error_names(path, "too large")
    monkeypatch.setattr(images, "MAX_PIXELS", 100)    # over twice the limit: Pillow errors
    assert_error_names(path, "too large")

    assert Image.MAX_IMAGE_PIXELS == limit_before


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_header_claiming_gigapixels_is_refused(tmp_path: Path) -> None:
    # A 100-byte file that says it is 30000 x 30000: never decoded.
    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0)
    path = tmp_path / "claims_huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
                     + png_chunk(b"IDAT", zlib.compress(b"\0" * 10)) + png_chunk(b"IEND", b""))

    assert_error_names(path, "too large")


def test_truncated_jpeg(tmp_path: Path) -> None:
    source = tmp_path / "whole.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(source)
    path = tmp_path / "cut.jpg"
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])

    assert_error_names(path)


def test_corrupt_jpeg(tmp_path: Path) -> None:
    source = tmp_path / "whole.jpg"
    Image.new("RGB", (32, 32), RED).save(source)
    data = bytearray(source.read_bytes())
    data[2:] = b"\xff\x00garbage" * 10          # JPEG magic, nonsense after it
    path = tmp_path / "broken.jpg"
    path.write_bytes(bytes(data))

    assert_error_names(path)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture\n")

    assert_error_names(path, "not an image")


def test_missing_file(tmp_path: Path) -> None:
    assert_error_names(tmp_path / "nowhere.png", "no such file")


def test_folder(tmp_path: Path) -> None:
    folder = tmp_path / "photos.jpg"
    folder.mkdir()

    assert_error_names(folder, "folder")


# --------------------------------------------------------------------------- samples and arrays

def test_sample_image_chelsea() -> None:
    image = sample_image("chelsea")

    assert_rgb(image, (300, 451, 3))
    assert image.source == "sample:chelsea"
    assert image.original_size == (451, 300)


def test_unknown_sample_image() -> None:
    with pytest.raises(ImageError, match="nosuch"):
        sample_image("nosuch")


def test_from_array_accepts_gray_and_rejects_floats() -> None:
    image = images.from_array(np.zeros((3, 5), dtype=np.uint8), "array")
    assert_rgb(image, (3, 5, 3))
    with pytest.raises(ImageError, match="uint8"):
        images.from_array(np.zeros((3, 5), dtype=np.float32), "array")
    with pytest.raises(ImageError, match="shape"):
        images.from_array(np.zeros((3, 5, 2), dtype=np.uint8), "array")


def test_dim_16_bit_gray_keeps_its_brightness(tmp_path) -> None:
    values = np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)
    path16 = tmp_path / "dim16.png"
    Image.fromarray(values).save(path16)
    path8 = tmp_path / "dim8.png"
    Image.fromarray((values / 257).round().astype(np.uint8)).save(path8)
    sixteen, eight = load_image(path16).pixels, load_image(path8).pixels
    assert int(sixteen.max()) <= 12
    assert np.abs(sixteen.astype(int) - eight.astype(int)).max() <= 1


def test_huge_images_get_a_small_preview(tmp_path) -> None:
    from cnnviewer.engine.media.images import PREVIEW_SIDE

    path = tmp_path / "wide.png"
    Image.new("RGB", (3000, 1500), (10, 200, 30)).save(path)
    image = load_image(path)
    assert image.pixels.shape == (1500, 3000, 3)
    assert image.preview.shape == (PREVIEW_SIDE // 2, PREVIEW_SIDE, 3)
    assert image.preview[0, 0].tolist() == [10, 200, 30]


@pytest.mark.parametrize("name", images.SAMPLE_NAMES)
def test_sample_read_from_the_wheel_equals_skimage_data(name: str) -> None:
    """The launch decodes the sample straight from scikit-image's data folder (no skimage.io
    import); it must be exactly the picture `skimage.data` gives."""
    from skimage import data

    assert images.sample_file(name) is not None
    expected = images.from_array(getattr(data, name)(), f"sample:{name}")
    np.testing.assert_array_equal(sample_image(name).pixels, expected.pixels)
