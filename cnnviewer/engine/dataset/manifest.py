"""The index manifest's schema, checked strictly when an index is opened.

A manifest is a file a user (or a crash, or a disk) may have changed: every field the queries use
is checked for its type and range here, so a damaged one is found at once and rebuilt, never used
(a negative row would read another image's values through Python's negative indexing).
Torch-free: the GUI thread opens indexes.
"""

from __future__ import annotations

import math
from typing import Any

MAX_FILES = 100_000_000       # far beyond any folder indexed on one machine; bounds a hand-edited count


class ManifestError(ValueError):
    """The manifest does not have the shape an index needs (one line: what is wrong)."""


def _integer(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ManifestError(f"{what} is {value!r}, not a whole number in [{low}, {high}]")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ManifestError(f"{what} is {value!r}, not a finite number")
    return float(value)


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{what} is {value!r}, not a text")
    return value


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise ManifestError(f"{what} is not a list")
    return value


def _rows(entries: Any, files: int, what: str, extra: dict[str, str]) -> set[int]:
    """Check each entry of `images` or `skipped`; the rows they use."""
    rows: set[int] = set()
    for entry in _list(entries, what):
        if not isinstance(entry, dict):
            raise ManifestError(f"an entry of {what} is not an object")
        row = _integer(entry.get("row"), 0, files - 1, f"a row of {what}")
        if row in rows:
            raise ManifestError(f"row {row} appears twice in {what}")
        rows.add(row)
        _string(entry.get("path"), f"a path of {what}")
        _integer(entry.get("bytes"), 0, 1 << 62, f"a size of {what}")
        _number(entry.get("mtime"), f"an mtime of {what}")
        for key, kind in extra.items():
            value = entry.get(key)
            if kind == "text":
                _string(value, f"a {key} of {what}")
            elif not (isinstance(value, list) and len(value) == 2):
                raise ManifestError(f"a {key} of {what} is not [width, height]")
            else:
                for side in value:
                    _integer(side, 0, 1 << 31, f"a {key} of {what}")
    return rows


def validate(manifest: Any) -> dict:
    """`manifest` when it has every field an index needs with the right types and ranges.

    Raises:
        ManifestError: the first thing found wrong.
    """
    if not isinstance(manifest, dict):
        raise ManifestError(f"the manifest is a {type(manifest).__name__}, not an object")
    for key in ("format", "folder", "model", "weights_sha256", "layers", "shapes", "files", "images", "skipped"):
        if key not in manifest:
            raise ManifestError(f"the manifest has no {key!r}")
    _integer(manifest["format"], 0, 1 << 16, "format")
    _string(manifest["folder"], "folder")
    _string(manifest["model"], "model")
    _string(manifest["weights_sha256"], "weights_sha256")
    files = _integer(manifest["files"], 0, MAX_FILES, "files")
    layers = _list(manifest["layers"], "layers")
    for layer in layers:
        if not isinstance(layer, str):
            raise ManifestError(f"layer {layer!r} is not a name")
    if len(set(layers)) != len(layers):
        raise ManifestError("a layer is listed twice")
    shapes = manifest["shapes"]
    if not isinstance(shapes, dict) or set(shapes) != set(layers):
        raise ManifestError("shapes do not match the layers")
    for layer, shape in shapes.items():
        if not isinstance(shape, list) or not 1 <= len(shape) <= 3:
            raise ManifestError(f"the shape of {layer} is {shape!r}")
        for side in shape:
            _integer(side, 1, 1 << 24, f"the shape of {layer}")
    images = _rows(manifest["images"], files, "images", {"size": "pair"})
    skipped = _rows(manifest["skipped"], files, "skipped", {"reason": "text"})
    if images & skipped:
        raise ManifestError(f"row {min(images & skipped)} is both an image and skipped")
    for key in ("read", "reused"):
        if key in manifest:
            _integer(manifest[key], 0, MAX_FILES, key)
    if "seconds" in manifest:
        _number(manifest["seconds"], "seconds")
    return manifest
