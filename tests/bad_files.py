"""Hostile files a user can hand the app: every kind of broken image, weights and labels file.

Shared by the CLI matrix and the window's load paths, so both see exactly the same files.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SKIP_FIFO = not hasattr(os, "mkfifo")


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header that claims a huge size (a decompression bomb's first bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    data = zlib.compress(b"\0" * 64)
    idat = struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(">I", zlib.crc32(b"IDAT" + data))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat


class _Evil:
    """Unpickles into os.system: the kind of file weights_only loading exists for."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _add_fifo(files: dict[str, Path], path: Path) -> None:
    """A named pipe: opening it for reading blocks until a writer comes (the hang to refuse)."""
    if SKIP_FIFO:
        return
    if not path.exists():
        os.mkfifo(path)
    files["fifo"] = path


def bad_images(folder: Path) -> dict[str, Path]:
    """name -> a file (or path) that is not a readable image."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(photo, format="PNG")
    files = {
        "empty": folder / "empty.jpg",
        "text": folder / "notes.jpg",
        "truncated": folder / "truncated.png",
        "bomb": folder / "bomb.png",
        "weights-as-image": folder / "weights.png",
        "missing": folder / "missing.jpg",
        "folder": folder / "a-folder.jpg",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("these are not pixels\n")
    files["truncated"].write_bytes(photo.getvalue()[: len(photo.getvalue()) // 2])
    files["bomb"].write_bytes(_png_claiming(200_000, 200_000))
    torch.save({"w": torch.zeros(3)}, files["weights-as-image"])
    files["folder"].mkdir(exist_ok=True)
    _add_fifo(files, folder / "pipe.jpg")
    return files


def bad_weights(folder: Path) -> dict[str, Path]:
    """name -> a file (or path) that is not loadable weights for any model."""
    folder.mkdir(parents=True, exist_ok=True)
    zipped = io.BytesIO()
    torch.save(torch.nn.Linear(4, 4).state_dict(), zipped)
    files = {
        "empty": folder / "empty.pth",
        "text": folder / "notes.pth",
        "truncated-zip": folder / "truncated.pth",
        "empty-safetensors": folder / "empty.safetensors",
        "corrupt-safetensors": folder / "corrupt.safetensors",
        "fake-pt2": folder / "fake.pt2",
        "evil-pickle": folder / "evil.pth",
        "fits-nothing": folder / "linear.pth",
        "image-as-weights": folder / "photo.pth",
        "missing": folder / "missing.pth",
        "folder": folder / "a-folder.pth",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("hello\n")
    files["truncated-zip"].write_bytes(zipped.getvalue()[: len(zipped.getvalue()) // 2])
    files["empty-safetensors"].write_bytes(b"")
    files["corrupt-safetensors"].write_bytes(struct.pack("<Q", 40) + b"{not json at all, really not json}  ")
    files["fake-pt2"].write_bytes(b"PK\x03\x04 not an exported program")
    with open(files["evil-pickle"], "wb") as stream:
        pickle.dump({"state_dict": _Evil()}, stream)
    files["fits-nothing"].write_bytes(zipped.getvalue())
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(files["image-as-weights"], format="PNG")
    files["folder"].mkdir(exist_ok=True)
    _add_fifo(files, folder / "pipe.pth")
    return files


def bad_labels(folder: Path) -> dict[str, Path]:
    """name -> a labels file that cannot be used."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"empty": folder / "empty.txt", "binary": folder / "binary.txt", "missing": folder / "missing.txt"}
    files["empty"].write_bytes(b"")
    files["binary"].write_bytes(bytes(range(256)) * 4)
    return files
