"""A single neuron a(y, x, c) over an indexed folder: its exact top images.

The index keeps each channel's maximum anywhere in its map, not the value at every position (that
would be the whole activation of every image). Ranking by one position therefore reads the
folder's images again, running the network only up to that layer; like indexing, it runs in
slices so the app can interleave it with its other work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from threading import Event

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from cnnviewer.engine.dataset.extract import _collate, _Images, _StopForward, worker_init
from cnnviewer.engine.dataset.index import DatasetIndex, Hit, IndexError_
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.types import LayerId


class NeuronScan:
    """The value of `channel` at `position` of `layer` in every indexed image."""

    def __init__(self, model: LoadedModel, index: DatasetIndex, layer: LayerId, channel: int,
                 position: tuple[int, int], *, batch_size: int = 32, workers: int = 0,
                 mp_context: str | None = None) -> None:
        shape = index.manifest["shapes"].get(layer)
        if shape is None or len(shape) != 3:
            raise IndexError_(f"{layer} has no spatial map in this index: rank by its channel instead")
        channels, height, width = shape
        y, x = position
        if not (0 <= channel < channels and 0 <= y < height and 0 <= x < width):
            raise IndexError_(f"{layer} is {channels}×{height}×{width}; ({channel}, {y}, {x}) is outside it")
        if layer not in model.layer_names:
            raise IndexError_(f"{model.name} has no layer {layer!r}")
        self.model, self.index, self.layer, self.channel, self.position = model, index, layer, channel, position
        self.rows = index.valid_rows
        self.values = np.full(len(self.rows), -np.inf, dtype=np.float32)
        self.done = 0
        files = [index.path(row) for row in self.rows]
        self._loader = iter(DataLoader(_Images(files, model.preprocess, model.input_channels), batch_size=batch_size,
                                       num_workers=workers, collate_fn=_collate,
                                       multiprocessing_context=mp_context if workers else None,
                                       worker_init_fn=worker_init() if workers else None))
        self.finished = False

    @property
    def total(self) -> int:
        return len(self.rows)

    def _batch(self, tensors: Tensor) -> np.ndarray:
        captured: list[Tensor] = []
        module = dict(self.model.module.named_modules())[self.layer]
        y, x = self.position

        def hook(_module, _inputs, output):
            tensor = output if isinstance(output, Tensor) else output[0]
            captured.append(tensor[:, self.channel, y, x].detach().float().cpu())
            raise _StopForward()

        handle = module.register_forward_hook(hook)
        was_training = self.model.module.training
        self.model.module.eval()
        try:
            with torch.inference_mode():
                self.model.module(tensors.to(self.model.device, dtype=self.model.dtype))
        except _StopForward:
            pass
        finally:
            handle.remove()
            self.model.module.train(was_training)
        return captured[0].numpy()

    def run(self, seconds: float | None = None, cancel: Event | None = None,
            progress: Callable[[int, int], None] | None = None) -> bool:
        """Read batches until every image is scored (True) or `seconds` have passed (False)."""
        deadline = None if seconds is None else time.perf_counter() + seconds
        for indices, tensors, bad, *_rest in self._loader:
            if tensors is not None:
                self.values[indices] = self._batch(tensors)
            self.done += len(indices) + len(bad)
            if progress is not None:
                progress(self.done, self.total)
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if deadline is not None and time.perf_counter() > deadline:
                return False
        self.finished = True
        return True

    def top(self, k: int = 9) -> list[Hit]:
        """The k images where the neuron is largest, best first (ties by file order)."""
        count = min(k, int(np.isfinite(self.values).sum()))
        best = np.argpartition(-self.values, count - 1)[:count] if count else np.array([], dtype=int)
        best = best[np.lexsort((best, -self.values[best]))]
        return [Hit(self.index.path(self.rows[i]), float(self.values[i]), tuple(self.position),
                    tuple(self.index.rows[int(self.rows[i])]["size"]), int(self.rows[i])) for i in best]

    def finite_values(self) -> np.ndarray:
        return self.values[np.isfinite(self.values)]
