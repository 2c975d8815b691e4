"""Per-image, per-channel statistics of chosen layers over a folder of images, batch by batch.

For every image and every channel of an indexed layer: the maximum activation, where it is
(the flat position y * w + x), and the mean (which is also the layer's global-average-pooled
feature, used for nearest neighbours). Computed inside forward hooks, so a batch's full
activations are never kept; the forward pass stops after the last layer the index needs.
Decoding and preprocessing run in DataLoader workers.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from threading import Event

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from cnnviewer.engine.dataset.names import LOGITS, THUMB_SIDE
from cnnviewer.engine.errors import Cancelled, CnnViewerError, ModelError, describe
from cnnviewer.engine.models.handle import LoadedModel, Preprocess
from cnnviewer.engine.runtime.folding import folded_copy
from cnnviewer.engine.types import LayerId


Status = tuple[int, int, int, float]   # (inode, size, mtime in ns, mtime) of a file, taken before decoding


def file_status(path: Path) -> Status | None:
    """What tells whether a file changed: compared before decoding and after storing (None: gone)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns, found.st_mtime


def _watch_parent(parent: int, _worker_id: int) -> None:
    """A DataLoader worker's init: it dies with the process that started it. Without this a kill -9 of
    `cnnviewer index` left its workers orphaned for good (each ~480 MB, blocked writing to a pipe no
    one reads). The kernel's parent-death signal first; a thread watching the parent's pid as well
    (the signal follows the parent thread, and exists on Linux only)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:          # the parent died before the signal was asked for
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)               # not sys.exit: joining the queue's feeder thread would hang

    threading.Thread(target=watch, name="cnnviewer-parent-watch", daemon=True).start()


def worker_init() -> Callable[[int], None]:
    """The worker_init_fn of every DataLoader that decodes images (picklable for 'spawn')."""
    return functools.partial(_watch_parent, os.getpid())


class _Images(Dataset):
    """Decoded, preprocessed images; an unreadable one becomes its error message. Each item carries the
    file's status taken BEFORE decoding: the index records that one, so a file rewritten while it was
    read never keeps the old content under its new size and time."""

    def __init__(self, files: Sequence[Path], preprocess: Preprocess, channels: int) -> None:
        self.files, self.preprocess, self.channels = list(files), preprocess, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        from PIL import Image

        from cnnviewer.engine.media.images import load_image
        from cnnviewer.engine.runtime.inference import prepare_input
        status = file_status(self.files[index])
        try:
            image = load_image(self.files[index])
            prepared = prepare_input(image, self.preprocess, torch.device("cpu"), torch.float32, self.channels)
            thumb = np.asarray(Image.fromarray(prepared.display).resize((THUMB_SIDE, THUMB_SIDE),
                                                                        Image.Resampling.BILINEAR))
            return index, prepared.tensor[0], "", image.original_size, thumb, status
        except CnnViewerError as error:
            return index, None, str(error), (0, 0), None, status
        except Exception as error:  # noqa: BLE001 - one bad file never stops the index
            return index, None, f"{self.files[index].name}: {describe(error)}", (0, 0), None, status


def _collate(items):
    good = [item for item in items if item[1] is not None]
    bad = [(item[0], item[2]) for item in items if item[1] is None]
    tensors = torch.stack([item[1] for item in good]) if good else None
    thumbs = np.stack([item[4] for item in good]) if good else np.zeros((0, THUMB_SIDE, THUMB_SIDE, 3), np.uint8)
    return [item[0] for item in good], tensors, bad, [item[3] for item in good], thumbs, \
        {item[0]: item[5] for item in items}


@dataclass
class BatchStats:
    """What one batch adds to the index."""

    indices: list[int]                          # positions in the file list
    sizes: list[tuple[int, int]]                # original (width, height) of each image
    maxima: dict[LayerId, np.ndarray]           # (B, C) float32
    positions: dict[LayerId, np.ndarray]        # (B, C) int32: y * w + x of the maximum
    means: dict[LayerId, np.ndarray]            # (B, C) float32
    skipped: list[tuple[int, str]]              # (position, reason)
    thumbs: np.ndarray                          # (B, THUMB_SIDE, THUMB_SIDE, 3) uint8: the model's crop
    status: dict[int, Status | None]            # position -> the file's status before it was decoded


class _StopForward(Exception):
    """Raised by the last needed hook: the rest of the network is not run."""


def _channel_stats(output: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(max, argmax position, mean) per channel of a (B, C, ...) output; vectors are C maps of 1x1."""
    values = output.detach().float()
    if values.dim() == 2:
        values = values[:, :, None]
    flat = values.flatten(2) if values.dim() > 2 else values
    means = flat.mean(dim=2).cpu().numpy()
    if flat.device.type == "cpu":
        # numpy's SIMD argmax + a gather is ~4x faster than torch's max(dim) on CPU (same values and
        # first-maximum positions): this pooling was ~7% of an index batch's time, beyond the forward.
        array = flat.contiguous().numpy()
        where = array.argmax(axis=2)
        maxima = np.take_along_axis(array, where[..., None], axis=2)[..., 0]
        return maxima, where.astype(np.int32), means
    maxima, where = flat.max(dim=2)
    return maxima.cpu().numpy(), where.to(torch.int32).cpu().numpy(), means


@contextmanager
def _stat_hooks(model: nn.Module, layers: Sequence[LayerId], sink: dict, shapes: dict,
                modules: dict[str, nn.Module] | None = None) -> Iterator[None]:
    """Hooks that reduce each needed layer's output to channel statistics at once (`modules`: the
    model's named modules, when the caller already has them: walking them costs ~5 ms a batch)."""
    modules = modules if modules is not None else dict(model.named_modules())
    remaining = {name for name in layers if name != LOGITS}
    last_needed = LOGITS in layers
    handles = []

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            tensor = output if isinstance(output, Tensor) else next(
                (o for o in (output if isinstance(output, (tuple, list)) else ()) if isinstance(o, Tensor)), None)
            if tensor is None or name in sink:
                return
            shapes.setdefault(name, tuple(tensor.shape[1:]))
            sink[name] = _channel_stats(tensor)
            if not last_needed and remaining <= set(sink):
                raise _StopForward()
        return hook

    try:
        for name in remaining:
            handles.append(modules[name].register_forward_hook(hook_for(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _fast_runner(module: nn.Module, layers: Sequence[LayerId], probe: Tensor,
                 named: dict[str, nn.Module]) -> tuple[nn.Module, dict[str, nn.Module]]:
    """The module the index runs, with its named modules: a copy with the eval-mode BatchNorms folded
    into their convolutions (mobilenet_v2's batch_norm was 15 % of the index's forward at one torch
    thread), unless some module is training, or the copy's statistics of the recorded layers on
    `probe` differ from the model's (then the model itself). A recorded layer is never folded away."""
    if any(child.training for child in named.values()):
        return module, named
    with torch.inference_mode():
        view = folded_copy(module, {name for name in layers if name != LOGITS})
        if view is module:
            return module, named
        view_named = dict(view.named_modules())
        try:
            runs = []
            for runner, modules in ((module, named), (view, view_named)):
                sink: dict = {}
                with _stat_hooks(runner, layers, sink, {}, modules):
                    try:
                        output = runner(probe)
                        if LOGITS in layers:
                            sink[LOGITS] = _channel_stats(output if isinstance(output, Tensor) else output[0])
                    except _StopForward:
                        pass
                runs.append(sink)
            expected, got = runs
            same = expected.keys() == got.keys() and all(
                np.abs(got[name][i] - expected[name][i]).max() <= 1e-3 * np.abs(expected[name][i]).max() + 1e-5
                for name in expected for i in (0, 2))   # maxima and means; a near-tie's position may move
        except Exception:   # noqa: BLE001 - any failure of the copy: run the model as it is
            same = False
    return (view, view_named) if same else (module, named)


def extract(model: LoadedModel, files: Sequence[Path], layers: Sequence[LayerId], *, batch_size: int = 32,
            workers: int = 0, cancel: Event | None = None, progress: Callable[[int, int], None] | None = None,
            mp_context: str | None = None) -> Iterator[tuple[BatchStats, dict]]:
    """Yield (statistics, layer shapes) batch by batch over `files` (in their order).

    The model is switched to eval mode for each batch only and put back after it, so a caller may
    pause between batches (the app interleaves indexing with its other work) and leave the model
    as it found it. `mp_context` ('spawn' in the app: no fork of a process running Qt threads).

    Raises:
        Cancelled: `cancel` was set (checked before every batch).
    """
    loader = DataLoader(_Images(files, model.preprocess, model.input_channels), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate, pin_memory=model.device.type == "cuda",
                        multiprocessing_context=mp_context if workers else None,
                        worker_init_fn=worker_init() if workers else None)
    done = 0
    shapes: dict[LayerId, tuple[int, ...]] = {}
    named = dict(model.module.named_modules())
    runner: nn.Module | None = None
    for indices, tensors, bad, sizes, thumbs, status in loader:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        sink: dict[LayerId, tuple] = {}
        if tensors is not None:
            inputs = tensors.to(model.device, dtype=model.dtype, non_blocking=True)
            if runner is None:
                runner, run_named = _fast_runner(model.module, layers, inputs[:2], named)
            # eval() and train() walk every module (~25 ms a batch for mobilenet_v2, ~4% of its
            # forward): only when some module is in training mode, as the app's models rarely are.
            switch = any(module.training for module in named.values())
            was_training = model.module.training
            if switch:
                model.module.eval()
            try:
                with _stat_hooks(runner, layers, sink, shapes, run_named), torch.inference_mode():
                    try:
                        output = runner(inputs)
                    except _StopForward:
                        output = None
                    except (RuntimeError, ValueError, IndexError) as error:   # e.g. an ONNX graph fixed at batch 1
                        hint = " (try a batch size of 1)" if len(inputs) > 1 else ""
                        raise ModelError(f"{model.name} cannot run a batch of {len(inputs)} images: "
                                         f"{describe(error)}{hint}") from None
            finally:
                if switch:
                    model.module.train(was_training)
            if LOGITS in layers and output is not None:
                logits = output if isinstance(output, Tensor) else output[0]
                shapes.setdefault(LOGITS, tuple(logits.shape[1:]))
                sink[LOGITS] = _channel_stats(logits)
        stats = BatchStats(indices, sizes, {n: s[0] for n, s in sink.items()},
                           {n: s[1] for n, s in sink.items()}, {n: s[2] for n, s in sink.items()}, bad, thumbs, status)
        done += len(indices) + len(bad)
        if progress is not None:
            progress(done, len(files))
        yield stats, shapes


def image_features(model: LoadedModel, image, layer: LayerId) -> np.ndarray:
    """The pooled features (channel means) of `layer` for one InputImage: a neighbours query."""
    from cnnviewer.engine.runtime.inference import prepare_input
    tensor = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels).tensor
    sink: dict[LayerId, tuple] = {}
    was_training = model.module.training
    model.module.eval()
    try:
        with _stat_hooks(model.module, [layer], sink, {}), torch.inference_mode():
            try:
                output = model.module(tensor)
            except _StopForward:
                output = None
    finally:
        model.module.train(was_training)
    if layer == LOGITS:
        sink[LOGITS] = _channel_stats(output if isinstance(output, Tensor) else output[0])
    if layer not in sink:
        raise CnnViewerError(f"{layer} gave no tensor output on this image")
    return sink[layer][2][0]
