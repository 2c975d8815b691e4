"""Choose where torch runs: CUDA when present, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from cnnviewer.engine.errors import ModelError

DEVICE_CHOICES = ("cpu", "cuda", "mps")


def pick_device(requested: str | None = None) -> torch.device:
    """Return the requested device, or the fastest one available.

    Raises:
        ModelError: the requested device does not exist on this machine.
    """
    if requested:
        kind = requested.split(":")[0]
        if kind not in DEVICE_CHOICES:
            raise ModelError(f"unknown device {requested!r}; choose cpu, cuda or mps")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ModelError("--device cuda: no CUDA GPU is available here")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise ModelError("--device mps: Apple's MPS is not available here")
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
