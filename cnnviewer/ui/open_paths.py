"""Where dropped or given files go: an image, a folder of images, weights, a video, a checkpoint folder.

Kept out of main_window (which only builds the window): the routing grows with every kind of file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnviewer.engine.media.kinds import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from cnnviewer.engine.types import WEIGHT_SUFFIXES


def open_paths(window: Any, paths: list[str], live: bool = False, compare: bool = False,
               dataset: bool = False) -> None:
    """Open dropped or given files in `window` (a MainWindow): an image (or a folder's first image),
    a weights file, or a video (played in Live detection; so is a folder or image dropped on that
    panel). Weights dropped on Compare become its model B, and a folder dropped there is opened as
    a training run's checkpoints; a folder dropped on Dataset is indexed."""
    for raw in paths:
        path = Path(raw)
        suffix = path.suffix.lower()
        if dataset and path.is_dir():
            window.open_folder(path, index=True)
            return
        if compare and path.is_dir():
            window.open_checkpoints(path)
            return
        if compare and suffix in WEIGHT_SUFFIXES:
            window.compare.load_other_weights(path)
            return
        if suffix in VIDEO_SUFFIXES and suffix != ".gif" or (live and (path.is_dir() or suffix in IMAGE_SUFFIXES)):
            window.docks["live_detection"].show()
            window.docks["live_detection"].raise_()
            window.live_detection.open_file(path)
            return
        if path.is_dir():
            window.open_folder(path)
            return
        if suffix in IMAGE_SUFFIXES:
            window.open_image(path)
            return
        if suffix in WEIGHT_SUFFIXES:
            window.load_weights(path)
            return
    names = ", ".join(Path(p).name for p in paths) or "nothing"
    window.show_message(f"Not an image or weights file: {names}")
