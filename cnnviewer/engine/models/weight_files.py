"""Read weights files safely: state dicts, checkpoints, safetensors, TorchScript, torch.export, trusted pickles.

A weights file may be a plain state dict, a training checkpoint wrapping one,
a safetensors file, a TorchScript archive, a ``torch.export`` program or (only
when the user trusts it) a fully pickled model. Pickles are always opened with
``weights_only=True`` first, because a full pickle can run any code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import pickletools
import threading
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from cnnviewer.engine.errors import (
    UntrustedPickleError,
    WeightsError,
    describe,
    first_line,
)

WeightsKind = Literal["state_dict", "torchscript", "exported", "module"]


# Checkpoint keys that hold the model, most specific first: a checkpoint with
# both 'state_dict' and 'state_dict_ema' gives the plain weights.
WRAPPER_KEYS: tuple[str, ...] = (
    "state_dict", "model_state_dict", "model_state", "model", "net", "network",
    "module", "weights", "params", "ema", "model_ema", "state_dict_ema",
    "ema_state_dict", "teacher", "student")


_PREFIXES = ("module.", "_orig_mod.")       # DataParallel/DDP, torch.compile


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}   # protocol-2 names


_PICKLE_GLOBAL_OPS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"})


@dataclass(frozen=True)
class WeightsFile:
    """What a weights file holds, read safely."""

    path: Path
    kind: WeightsKind
    state_dict: dict[str, Tensor] | None     # kind == "state_dict", normalised
    module: nn.Module | None                 # torchscript / exported / module
    ignored_keys: tuple[str, ...] = ()       # e.g. 'epoch', 'optimizer'


def read_weights(path: str | Path, *, trust: bool = False) -> WeightsFile:
    """Read any supported weights file without running code from it.

    Args:
        path: The file (see ``WEIGHT_SUFFIXES``; the content decides the format).
        trust: Allow a full pickled model, which runs code from the file.

    Returns:
        The file's state dict (normalised) or module, loaded on the CPU.

    Raises:
        UntrustedPickleError: The file is a full pickle and ``trust`` is False.
        WeightsError: Missing, unreadable, corrupt or not a weights file.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise WeightsError(f"{path}: no such file" if not path.exists()
                           else f"{path} is not a file")
    try:
        with path.open("rb") as f:
            head = f.read(16)
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsError(f"{name} cannot be read: {exc.strerror or exc}") from exc
    if size == 0:
        raise WeightsError(f"{name} is empty (0 bytes)")
    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(head, size):
        return _read_safetensors(path, head)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise WeightsError(f"{name} is corrupt or truncated (damaged zip archive)") from exc
        if any(m.endswith(("archive_format", "serialized_exported_program.json")) for m in members):
            return _read_exported(path, trust)
        if any(m.endswith("constants.pkl") or "/code/" in m for m in members):
            return _read_torchscript(path)
        if not any(m.endswith("data.pkl") for m in members):
            raise WeightsError(f"{name} is not a weights file (a zip archive without PyTorch data)")
    return _read_pickle(path, head, trust)


def _read_stable(path: Path) -> bytes:
    """The whole file, read once; a file that changed while it was read is refused."""
    try:
        before = path.stat()
        data = path.read_bytes()
        after = path.stat()
    except OSError as exc:
        raise WeightsError(f"{path.name} cannot be read: {exc.strerror or exc}") from exc
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(data) != after.st_size:
        raise WeightsError(f"{path.name} changed while it was being read (is something saving over it?); "
                           "try again once it is written")
    return data


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """Recognise safetensors by content: u64 header length, then a JSON object."""
    return len(head) > 8 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size


def _read_safetensors(path: Path, head: bytes) -> WeightsFile:
    """Parse a safetensors file from a private copy of its bytes.

    Not `safetensors.torch.load_file`: it memory-maps the file, and a file
    truncated underneath (a training script saving over its checkpoint) then
    kills the process with SIGBUS instead of raising.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = _read_stable(path)
    try:
        raw = load(data)
    except SafetensorError as exc:
        reason = ("corrupt or truncated" if head[8:9] == b"{" else "not a safetensors file")
        raise WeightsError(f"{path.name} is {reason} ({first_line(exc)})") from exc
    return _state_dict_file(path, raw, ())


def _read_torchscript(path: Path) -> WeightsFile:
    try:
        with _quiet_deprecations():
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:   # the archive's TorchScript can fail in many ways
        raise WeightsError(f"{path.name} is a TorchScript archive that cannot be loaded "
                           f"({describe(exc)})") from exc
    return WeightsFile(path, "torchscript", None, module)


_force_lock = threading.Lock()


@contextmanager
def forced_weights_only() -> Iterator[None]:
    """Make every torch.load inside (including library code's) use weights_only=True.

    Libraries call torch.load for us with weights_only=False in places:
    torch.export.load for pickled constants and legacy archives, torch.hub for
    cached checkpoints. torch honours TORCH_FORCE_WEIGHTS_ONLY_LOAD over the
    call's own argument; it is process-wide, so one loader at a time.
    """
    with _force_lock:
        previous = os.environ.get(_FORCE_ENV)
        os.environ[_FORCE_ENV] = "1"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(_FORCE_ENV, None)
            else:
                os.environ[_FORCE_ENV] = previous


_FORCE_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


def _read_exported(path: Path, trust: bool = False) -> WeightsFile:
    try:
        with _quiet_deprecations(), (contextlib.nullcontext() if trust else forced_weights_only()):
            program = torch.export.load(str(path))
    except pickle.UnpicklingError as exc:   # pickled constants that need code to rebuild
        raise UntrustedPickleError(
            f"{path.name} is a torch.export archive holding pickled objects; loading them runs "
            "code from the file") from exc
    except Exception as exc:   # e.g. an AOTInductor package, or ops from an unloaded library
        raise WeightsError(f"{path.name} is a torch.export archive that cannot be loaded "
                           f"({describe(exc)})") from exc
    try:
        module: nn.Module = torch.export.unflatten(program)   # keeps dotted layer names
    except Exception:   # unflatten rejects some graphs; the flat module still runs
        module = program.module()
    return WeightsFile(path, "exported", None, module)


def _read_pickle(path: Path, head: bytes, trust: bool) -> WeightsFile:
    """Load a ``torch.save`` file (zip or legacy) or a plain pickle."""
    name = path.name
    try:
        with warnings.catch_warnings():   # torch's notice about pickle protocols
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The restricted unpickler refused something: a class, a function, an
        # opcode. Only a static look at the pickle tells which, without running it.
        needs = _unsafe_globals(path, head)
        if needs is None:
            raise WeightsError(f"{name} is not a weights file ({_pickle_reason(head)})") from exc
        if not trust:
            raise UntrustedPickleError(_untrusted_message(name, needs)) from exc
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)  # explicit trust only
        except Exception as exc2:   # the pickle's own classes may be missing or fail
            raise WeightsError(f"{name} is a full pickled model that cannot be loaded "
                               f"({describe(exc2)})") from exc2
    except (EOFError, RuntimeError, IndexError, ValueError, OSError) as exc:
        reason = "corrupt or truncated" if _is_pickle_head(head) else "not a weights file"
        raise WeightsError(f"{name} is {reason} ({describe(exc)})") from exc
    except Exception as exc:   # torch.load raises KeyError & co. on random bytes
        if _is_pickle_head(head):
            raise WeightsError(f"{name} is corrupt or truncated ({describe(exc)})") from exc
        raise WeightsError(f"{name} is not a weights file (unknown format)") from exc
    return _interpret(path, obj)


def _interpret(path: Path, obj: Any) -> WeightsFile:
    """Turn what ``torch.load`` returned into a state dict or a module."""
    found, ignored = _unwrap(obj)
    if isinstance(found, nn.Module):
        return WeightsFile(path, "module", None, found, ignored)
    if isinstance(found, Mapping):
        dropped = tuple(str(k) for k, v in found.items() if not isinstance(v, Tensor))
        return _state_dict_file(path, found, ignored + dropped)
    if isinstance(obj, Mapping):
        if not obj or any(isinstance(obj.get(k), Mapping) and not obj[k] for k in WRAPPER_KEYS):
            raise WeightsError(f"{path.name} holds an empty state dict")
        keys = ", ".join(str(k) for k in list(obj)[:5])
        raise WeightsError(f"{path.name} is not a weights file (a dict without tensors; keys: {keys})")
    raise WeightsError(f"{path.name} is not a weights file (it holds a {type(obj).__name__})")


def _unwrap(obj: Any, depth: int = 0) -> tuple[Any, tuple[str, ...]]:
    """Find the state dict or module inside a checkpoint.

    Known wrapper keys come first, so ``{'model': sd, 'best_acc': tensor}``
    gives ``sd``; then a dict holding tensors itself; then the only entry
    that holds tensors, whatever its key.

    Returns:
        (the Mapping or nn.Module found, or None; the checkpoint keys skipped).
    """
    if isinstance(obj, nn.Module):
        return obj, ()
    if not isinstance(obj, Mapping) or depth > 3:
        return None, ()
    for key in WRAPPER_KEYS:
        if key in obj:
            found, inner = _unwrap(obj[key], depth + 1)
            if found is not None:
                return found, tuple(str(k) for k in obj if k != key) + inner
    if _holds_tensors(obj):
        return obj, ()
    holders = [k for k, v in obj.items() if isinstance(v, nn.Module) or _holds_tensors(v)]
    if len(holders) == 1:
        return obj[holders[0]], tuple(str(k) for k in obj if k != holders[0])
    return None, ()


def _holds_tensors(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _state_dict_file(path: Path, raw: Mapping[str, Any], ignored: tuple[str, ...]) -> WeightsFile:
    state_dict = normalize_state_dict(raw)
    if not state_dict:
        raise WeightsError(f"{path.name} holds an empty state dict")
    return WeightsFile(path, "state_dict", state_dict, None, ignored)


def normalize_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """Keep the tensors and strip wrapper prefixes shared by every key.

    ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) are
    removed, repeatedly and in any order, but only when all keys carry them,
    so a model with a real submodule called ``module`` keeps its names.
    """
    state = {k: (v.detach() if isinstance(v, nn.Parameter) else v)
             for k, v in raw.items() if isinstance(k, str) and isinstance(v, Tensor)}
    while state:
        prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _is_pickle_head(head: bytes) -> bool:
    """True for pickle protocol 2+ (what torch.save writes) or a torch zip."""
    return head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") \
        or head.startswith(b"PK\x03\x04")


def _untrusted_message(name: str, needs: list[str]) -> str:
    """What a refused pickle would run, named: a model's classes, or anything else it imports."""
    def listed(names: list[str]) -> str:
        return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")

    # The file's own names first (torch's come in no fixed order and say less), then torch's.
    needs = sorted(needs, key=lambda g: (g.startswith(("torch.", "torchvision.")), g))
    # Classes (a capitalised last name) are rebuilt; anything else is a function the pickle calls.
    functions = [g for g in needs if not g.rpartition(".")[2][:1].isupper() and not g.startswith("torch.")]
    if functions:
        return f"{name} is a pickle that calls {listed(functions)} when it is loaded: loading it runs that code"
    if needs:
        return f"{name} is a full pickled model (it rebuilds {listed(needs)}); loading it runs code from the file"
    return f"{name} is a pickle that builds its objects from code named on the fly: loading it runs code"


def _unsafe_globals(path: Path, head: bytes) -> list[str] | None:
    """Name the globals a refused pickle needs, reading it statically.

    Returns:
        The globals torch does not allow (empty when their names are built on
        the pickle stack), or None when the file needs none: then it is a
        pickle of plain data, or not a pickle at all.
    """
    if head.startswith(b"PK\x03\x04"):
        try:
            needs = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:   # static disassembly failed; the file is not loadable either
            return None
        return needs or None
    if not _is_pickle_head(head):
        return None
    found: list[str] = []
    any_global = False
    with path.open("rb") as f:
        # Legacy torch.save writes several pickles in a row (magic number,
        # protocol, sys info, the object, storage keys), then raw bytes.
        for _ in range(5):
            try:
                strings: list[str] = []   # protocol 4+ names a global by the two strings pushed before it
                for op, arg, _pos in pickletools.genops(f):
                    any_global = any_global or op.name in _PICKLE_GLOBAL_OPS
                    if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                        module, _, attr = arg.partition(" ")
                        found.append(f"{_PY2_MODULES.get(module, module)}.{attr}")
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    if isinstance(arg, str) and "UNICODE" in op.name:
                        strings = (strings + [arg])[-2:]
            except ValueError:   # truncated, or the raw storage bytes
                break
    if not any_global:
        return None
    allowed = _allowed_globals()
    return list(dict.fromkeys(g for g in found if g not in allowed))


def _allowed_globals() -> set[str]:
    """Globals torch's weights-only unpickler accepts (private API, so guarded)."""
    try:
        from torch import _weights_only_unpickler as wou
        return set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    except Exception:   # a future torch may move it; names are only shown to the user
        return set()


def _pickle_reason(head: bytes) -> str:
    if not _is_pickle_head(head):
        return "unknown format"
    return "a Python pickle that holds no tensors or model"


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """Hide torch.jit's deprecation notice: loading old archives is the point."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*deprecated")
        yield
