"""Load user images robustly into RGB uint8 arrays.

Pillow decodes every format people drag in; this module turns the many ways a
picture can be stored (EXIF rotation, palette, CMYK, alpha, 16-bit, animation)
into one shape the rest of the engine can rely on: C-contiguous (H, W, 3) uint8.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnviewer.engine.errors import ImageError, first_line
from cnnviewer.engine.media.files import regular_file
from cnnviewer.engine.media.kinds import IMAGE_SUFFIXES, image_files  # noqa: F401 - named here too

# Larger images are shrunk on load: nothing downstream needs more pixels than
# this, and a 100-megapixel photo would otherwise cost seconds per resize.
MAX_SIDE = 4096
# What the input panel draws: enough for a sharp view, cheap for the GUI thread.
PREVIEW_SIDE = 1280
# Checked on the header before decoding, so a hostile file never allocates
# gigabytes (Pillow's own guard errors only at twice its 89 Mpx default).
MAX_PIXELS = 120_000_000

SAMPLE_NAMES = ("chelsea", "astronaut", "coffee", "rocket")


@dataclass(frozen=True, eq=False)
class InputImage:
    """An RGB image ready for the engine and the UI.

    Attributes:
        pixels: (H, W, 3) uint8, C-contiguous, never modified after creation.
        source: file path or sample name, for titles and messages.
        original_size: (width, height) before any downscaling.
        preview: pixels shrunk to at most PREVIEW_SIDE for display (pixels itself when smaller).
    """

    pixels: np.ndarray
    source: str
    original_size: tuple[int, int]
    preview: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.preview is None:
            object.__setattr__(self, "preview", _preview(self.pixels))

    @property
    def name(self) -> str:
        """Short name for titles: the file name or sample name."""
        return Path(self.source).name


def _preview(pixels: np.ndarray) -> np.ndarray:
    """A display copy no larger than PREVIEW_SIDE (the array itself when it fits)."""
    if max(pixels.shape[:2]) <= PREVIEW_SIDE:
        return pixels
    image = Image.fromarray(pixels)
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.BILINEAR)
    preview = np.ascontiguousarray(np.asarray(image))
    preview.setflags(write=False)
    return preview


def _to_8bit(array: np.ndarray, mode: str) -> np.ndarray:
    """Map high-bit-depth gray to 0..255 by its format's full range, not the image's own
    (a dim 16-bit photo stays dim, as the same photo saved in 8 bits would)."""
    low, high = float(array.min()), float(array.max())
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        scaled = array / 257.0
    elif mode == "F" and low >= 0 and high <= 1.0:
        scaled = array * 255.0
    else:   # unknown range (negative or huge values): stretch what is there
        scaled = (array - low) / (high - low) * 255.0 if high > low else array * 0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing alpha onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(_to_8bit(np.asarray(image, dtype=np.float64), image.mode), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def from_pil(image: Image.Image, source: str) -> InputImage:
    """Build an InputImage from an already opened Pillow image."""
    image = ImageOps.exif_transpose(image) or image
    original_size = image.size
    image = _to_rgb(image)
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    pixels.setflags(write=False)
    return InputImage(pixels=pixels, source=source, original_size=original_size)


def from_array(pixels: np.ndarray, source: str) -> InputImage:
    """Wrap an (H, W), (H, W, 3) or (H, W, 4) uint8 array as an InputImage."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        raise ImageError(f"{source}: expected uint8 pixels, got {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return from_pil(Image.fromarray(array), source)
    raise ImageError(f"{source}: unsupported pixel array shape {array.shape}")


def load_image(path: str | Path) -> InputImage:
    """Read an image file as RGB.

    Args:
        path: any file Pillow reads (JPEG, PNG, BMP, TIFF, WebP, GIF: first frame).

    Returns:
        The image, EXIF-rotated, converted to RGB, at most MAX_SIDE pixels wide.

    Raises:
        ImageError: one line naming the file and the reason.
    """
    path = Path(path)
    name = path.name
    regular_file(path)   # missing, a folder, a FIFO or a device: refused before Pillow opens it
    too_large = f"{name}: image is too large to open safely (over {MAX_PIXELS:,} pixels)"
    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 Mpx; MAX_PIXELS below is this app's own, checked limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)   # reads the header only
        with image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(too_large)
            image.seek(0)  # first frame of GIF / multi-page TIFF
            image.load()
            return from_pil(image, str(path))
    except Image.DecompressionBombError:
        raise ImageError(too_large) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{name}: corrupt or truncated image ({first_line(error)})") from None


def sample_image(name: str = "chelsea") -> InputImage:
    """Return one of scikit-image's bundled photos (shipped in its wheel, no download).

    The file is decoded with Pillow straight from the wheel's data folder: `skimage.data` gives the
    same pixels but imports scikit-image's I/O stack (scipy, imageio), 0.35 s of the launch's path
    to its first predictions. `skimage.data` stays the fallback where the file is not beside it.
    """
    if name not in SAMPLE_NAMES:
        raise ImageError(f"unknown sample image {name!r}; choose from {', '.join(SAMPLE_NAMES)}")
    bundled = sample_file(name)
    if bundled is not None:
        with Image.open(bundled) as image:
            return from_array(np.asarray(image.convert("RGB")), f"sample:{name}")
    from skimage import data

    return from_array(getattr(data, name)(), f"sample:{name}")


def sample_file(name: str) -> Path | None:
    """Where scikit-image's wheel keeps a sample photo (found without importing scikit-image)."""
    from importlib.util import find_spec

    spec = find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for suffix in (".png", ".jpg"):
            candidate = Path(folder) / "data" / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None
