"""Build a model from the user's own Python file (``PATH.py:NAME``).

This runs the user's code on purpose: they chose the file, exactly as when
running it with ``python``. Every failure becomes a one-line ``ModelError``.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from torch import nn

from cnnviewer.engine.errors import ModelError, describe

_module_ids = itertools.count()


def build_user_model(spec: str) -> nn.Module:
    """Import ``PATH.py`` and build ``NAME`` from it.

    Args:
        spec: ``PATH.py:NAME``, where NAME is an ``nn.Module`` subclass taking
            no arguments, a function returning an ``nn.Module``, or a module
            instance. The last colon splits, so ``C:\\nets\\net.py:Net`` works.

    Returns:
        The freshly built model, as the file's code left it.

    Raises:
        ModelError: Bad spec, missing file, unknown NAME, or the file's code
            failed while importing or building.
    """
    path, name = _parse(spec)
    module = _import(path)
    if not hasattr(module, name):
        available = _candidates(module)
        listing = f"available: {', '.join(available)}" if available else "it defines no nn.Module or function"
        raise ModelError(f"{path.name} has no '{name}'; {listing}")
    target = getattr(module, name)
    if isinstance(target, nn.Module):
        return target
    if inspect.isclass(target) and not issubclass(target, nn.Module):
        raise ModelError(f"{path.name}:{name} is a class but not an nn.Module subclass")
    if not callable(target):
        raise ModelError(f"{path.name}:{name} is neither an nn.Module class nor a function "
                         f"returning one (it is {type(target).__name__})")
    try:
        with _importable_siblings(path):
            model = target()
    except (Exception, SystemExit) as exc:   # user code: any failure is reported, not raised
        raise ModelError(f"building {path.name}:{name} failed: {describe(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{path.name}:{name}() returned {type(model).__name__}, not an nn.Module")
    return model


def _parse(spec: str) -> tuple[Path, str]:
    """Split ``PATH.py:NAME`` at the last colon and check both halves."""
    raw_path, sep, name = spec.strip().rpartition(":")
    if not sep or not name.isidentifier():
        raise ModelError(f"'{spec}' names no model: use PATH.py:NAME, e.g. mynet.py:Net")
    path = Path(raw_path).expanduser()
    if not path.is_file():
        raise ModelError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    return path, name


def _import(path: Path) -> ModuleType:
    """Execute the file as a fresh module with a unique name."""
    module_name = f"cnnviewer_user_arch_{next(_module_ids)}_{_safe(path.stem)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"{path.name} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module   # dataclasses and pickling look classes up here
    try:
        with _importable_siblings(path):
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:   # user code: any failure is reported, not raised
        del sys.modules[module_name]
        raise ModelError(f"importing {path.name} failed: {describe(exc)}") from exc
    return module


@contextmanager
def _importable_siblings(path: Path) -> Iterator[None]:
    """Let the file import modules next to it, as ``python PATH.py`` would."""
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:   # the user's code removed it itself
            pass


def _candidates(module: ModuleType) -> list[str]:
    """Names in the file that could build a model: its nn.Modules and functions."""
    found = []
    for attr, value in vars(module).items():
        if attr.startswith("_"):
            continue
        own = getattr(value, "__module__", None) == module.__name__   # not imported
        if isinstance(value, nn.Module) or own and (
                inspect.isfunction(value) or inspect.isclass(value) and issubclass(value, nn.Module)):
            found.append(attr)
    return found


def _safe(stem: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in stem)


