"""Which files are images and videos, told by their names: no numpy, no Pillow.

The window needs these before it shows (file dialogs' filters, drops, folder browsing);
images.py and sources.py, which decode, import numpy and Pillow (0.25 s at launch).
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name (what a folder source plays)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
