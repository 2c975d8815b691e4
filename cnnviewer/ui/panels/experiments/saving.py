"""An experiment's result as a PNG (what the tab shows) and a JSON file beside it (its numbers).

Each file is written through a temporary file and renamed, so a crash or a full disk leaves the
old file or the new one, never a truncated one; the PNG also carries the same JSON in a text
chunk, so a PNG copied elsewhere alone still says what it measured.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QWidget

PNG_TEXT_KEY = "cnnviewer-experiment"


def suggested_name(experiment: str, model: str) -> str:
    """e.g. lesion-mobilenet_v2.png: what and on which model, safe as a file name."""
    stem = "-".join(part for part in (experiment, model) if part)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_") + ".png"


def plain(value):
    """`value` as JSON can hold it: numpy arrays and numbers as lists and floats, NaN and inf as None
    (json.dumps would otherwise write NaN, which strict readers refuse)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def save_experiment(path: str | Path, picture: QWidget, payload: dict) -> str:
    """Write `picture` (grabbed as shown) to `path` and `payload` to `path` with .json.

    Returns:
        one line for the panel: "Saved ..." or why nothing was saved.
    """
    from cnnviewer.engine.errors import CnnViewerError
    from cnnviewer.engine.media.files import atomic_output, writable_target

    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    text = json.dumps(plain(payload), indent=1, allow_nan=False)
    image = picture.grab().toImage()
    image.setText(PNG_TEXT_KEY, text)
    try:
        target = writable_target(path)
        json_target = writable_target(path.with_suffix(".json"))
        # both written in full before either replaces its old file: a failure in either keeps both old
        with atomic_output(json_target) as json_temporary, atomic_output(target) as png_temporary:
            json_temporary.write_text(text, encoding="utf-8")
            if not image.save(str(png_temporary), "PNG"):
                raise CnnViewerError(f"{path}: the picture could not be encoded")
    except (CnnViewerError, OSError) as error:
        return f"Not saved: {error}"
    return f"Saved {path.name} and {path.with_suffix('.json').name} in {path.parent}"
