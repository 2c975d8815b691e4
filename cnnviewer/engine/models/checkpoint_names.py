"""Where a checkpoint falls in training, from its name or its safetensors header (no tensor read).

Kept apart from checkpoints.py (the series) so each stays short. Names come from training loops
that also put their hyper-parameters in them (`lr1e-4_wd5e-4_bs64_epoch2.pt`): the literal
`epoch` is looked for first, and a bare `e` only where no digit or dot comes before it (`1e-4`
is a learning rate, not epoch 4).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TEMP_SUFFIXES = (".tmp", ".partial", ".part", ".temp", "~")
# What a run's folder lists: files that hold weights for one architecture. `.onnx` and `.pt2` are
# whole exported models (no state dict to fit into the run's architecture): never checkpoints.
# A TorchScript archive is a `.pt` too: it is listed, and refused with one line when read.
CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar"})
ORDER_KEYS = {"epoch": "epoch", "step": "step", "global_step": "step", "iteration": "step", "iter": "step"}
HEADER_LIMIT = 100_000_000   # a safetensors header longer than this is not one (and is not read)

_EPOCH_STEP = re.compile(r"epoch[=_\-]?(\d+).*?(?:global_)?step[=_\-]?(\d+)", re.IGNORECASE)
_EPOCH_WORD = re.compile(r"epoch[=_\-]?(\d+)", re.IGNORECASE)
# `ep3`, `e12`, `_e3`: not after a letter, a digit or a dot (`1e-4`, `5e-4`, `0.e3` are numbers).
_EPOCH_SHORT = re.compile(r"(?<![a-z0-9.])(?:ep|e)[=_\-]?(\d+)(?![a-z.])", re.IGNORECASE)
_STEP = re.compile(r"(?:step|iter(?:ation)?|(?<![a-z0-9.])it|(?<![a-z0-9.])s)[=_\-]?(\d+)(?![a-z.])",
                   re.IGNORECASE)
CHECKPOINT_DIR = re.compile(r"checkpoint[=_\-]?(\d+)$", re.IGNORECASE)   # Hugging Face: the global step
_NUMBER = re.compile(r"(\d+)(?!.*\d)")   # the last number in a name


def is_temporary(name: str) -> bool:
    """A writer's temporary or hidden file (`.x.pt`, `x.pt.tmp`, `x.partial`, `x~`): never a checkpoint."""
    return name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES)


def order_from_name(name: str) -> tuple[int | None, int | None, bool]:
    """(epoch, step, named) from a file or folder name; `named` says the numbers were labelled.

    A bare number (`model_0005.pth`, `1500.pt`, `checkpoint-1500`) is read as a step: detectron2,
    Hugging Face and most loops number checkpoints by iteration.
    """
    stem = name
    for suffix in CHECKPOINT_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    both = _EPOCH_STEP.search(stem)
    if both:
        return int(both.group(1)), int(both.group(2)), True
    epoch = _EPOCH_WORD.search(stem) or _EPOCH_SHORT.search(stem)
    step = _STEP.search(stem)
    if epoch or step:
        return (int(epoch.group(1)) if epoch else None), (int(step.group(1)) if step else None), True
    number = _NUMBER.search(stem)
    return None, (int(number.group(1)) if number else None), False


def safetensors_header(path: str | Path) -> tuple[int, dict]:
    """(header length, header) of a safetensors file, the length capped (a hostile or foreign file
    must not make the app read gigabytes as JSON).

    Raises:
        OSError, ValueError: unreadable, too long, or not JSON.
    """
    with Path(path).open("rb") as file:
        length = int.from_bytes(file.read(8), "little")
        if length > HEADER_LIMIT:
            raise ValueError(f"a safetensors header of {length} bytes")
        header = json.loads(file.read(length))
    if not isinstance(header, dict):
        raise ValueError("a safetensors header that is not a table")
    return length, header


def safetensors_order(path: str | Path) -> tuple[int | None, int | None]:
    """Epoch/step from a safetensors header's `__metadata__` (strings), if the writer put them there."""
    try:
        meta = safetensors_header(path)[1].get("__metadata__") or {}
        values = {ORDER_KEYS[k]: int(v) for k, v in meta.items() if k in ORDER_KEYS and str(v).isdigit()}
    except (OSError, ValueError, AttributeError):
        return None, None
    return values.get("epoch"), values.get("step")


def order_label(epoch: int | None, step: int | None, named: bool, fallback: str) -> str:
    """'epoch 3 · step 1200', or `fallback` (the name) when nothing labelled gives the order."""
    parts = ([f"epoch {epoch}"] if epoch is not None else []) + ([f"step {step}"] if step is not None else [])
    return " · ".join(parts) if parts and (named or epoch is not None) else fallback
