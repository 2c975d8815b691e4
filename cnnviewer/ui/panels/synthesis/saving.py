"""Where Synthesis' Save… suggests writing, and the job that writes the PNG and its recipe.

The app-wide last folder is often the indexed image folder, where a synthesis.png written by one
Enter was picked up by the next index; Save here starts in the folder it last saved to, else the
user's Pictures, and names the file after its method and target (fourier-class130-flamingo.png)."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QStandardPaths

_save_folder: list[str] = [""]     # the last folder Synthesis saved to, this session


def save_folder() -> Path:
    """The last folder saved to, else Pictures (if it exists), else home."""
    if _save_folder[0] and Path(_save_folder[0]).is_dir():
        return Path(_save_folder[0])
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    return Path(pictures) if pictures and Path(pictures).is_dir() else Path.home()


def remember(path: str) -> None:
    """`path` was chosen: the next Save starts in its folder."""
    _save_folder[0] = str(Path(path).parent)


def file_name(method: str | None, target, label) -> str:
    """e.g. fourier-class130-flamingo.png, ascent-features.14-ch36.png, style.png.

    `label(index)`: a class's name (or None)."""
    parts = [method or "synthesis"]
    if target is not None and method != "style":
        if target.layer is None and target.class_index is not None:
            parts.append(f"class{target.class_index}")
            name = label(target.class_index) if label else None
            if name:
                parts.append(name)
        elif target.layer is not None:
            parts.append(target.layer)
            if target.channel is not None:
                parts.append(f"ch{target.channel}")
            if target.neuron is not None:
                parts.append(f"y{target.neuron[0]}x{target.neuron[1]}")
    text = "-".join(parts)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") + ".png"


def suggested_path(method: str | None, target, label) -> str:
    """The full path Save… proposes."""
    return str(save_folder() / file_name(method, target, label))
