"""Building a model from the user's own architecture file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from torch import nn

from cnnviewer.engine.errors import ModelError
from cnnviewer.engine.models.user_arch import build_user_model

NETS = '''
import torch
from torch import nn
from helper import WIDTH          # a module next to this file


class Net(nn.Module):
    def __init__(self, width: int = WIDTH):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)


class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()


class NotAModule:
    pass


def make_net():
    return nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())


def make_number():
    return 42


def broken():
    raise ValueError("bad config\\nsecond line")


model = nn.Linear(2, 2)
SIZE = 3
'''


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    (tmp_path / "helper.py").write_text("WIDTH = 5\n")
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def _write(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return path


def test_builds_class(nets):
    model = build_user_model(f"{nets}:Net")
    assert isinstance(model, nn.Module) and model.conv.out_channels == 5


def test_builds_factory_and_instance(nets):
    assert isinstance(build_user_model(f"{nets}:make_net"), nn.Sequential)
    assert isinstance(build_user_model(f"{nets}:model"), nn.Linear)


def test_each_build_imports_afresh(nets):
    first, second = build_user_model(f"{nets}:Net"), build_user_model(f"{nets}:Net")
    assert type(first) is not type(second)   # an edited file is picked up


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match=r"nope\.py: no such file"):
        build_user_model(f"{tmp_path / 'nope.py'}:Net")


@pytest.mark.parametrize("spec", ["nets.py", "nets.py:", "nets.py:not a name"])
def test_no_name(spec):
    with pytest.raises(ModelError, match="use PATH.py:NAME"):
        build_user_model(spec)


def test_unknown_name_lists_candidates(nets):
    with pytest.raises(ModelError) as info:
        build_user_model(f"{nets}:Nett")
    message = str(info.value)
    assert message.startswith("nets.py has no 'Nett'; available: ")
    for name in ("Net", "NeedsArgs", "make_net", "broken", "model"):
        assert name in message
    for name in ("NotAModule", "SIZE", "torch", "nn", "WIDTH"):
        assert name not in message.split("available: ")[1].split(", ")


@pytest.mark.parametrize("name, pattern", [
    ("NotAModule", "class but not an nn.Module subclass"),
    ("SIZE", r"SIZE is neither an nn.Module class nor a function returning one \(it is int\)"),
    ("make_number", r"make_number\(\) returned int, not an nn.Module"),
])
def test_not_a_model(nets, name, pattern):
    with pytest.raises(ModelError, match=pattern):
        build_user_model(f"{nets}:{name}")


def test_exception_while_building(nets):
    with pytest.raises(ModelError) as info:
        build_user_model(f"{nets}:broken")
    assert str(info.value) == "building nets.py:broken failed: ValueError: bad config"
    with pytest.raises(ModelError, match="NeedsArgs failed: TypeError: .*width"):
        build_user_model(f"{nets}:NeedsArgs")


@pytest.mark.parametrize("code, pattern", [
    ("def f(:\n", "importing bad.py failed: SyntaxError: "),
    ("import no_such_module_xyz\n", "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
    ("raise SystemExit(2)\n", "importing bad.py failed: SystemExit: 2"),
])
def test_exception_while_importing(tmp_path, code, pattern):
    path = _write(tmp_path, "bad.py", code)
    with pytest.raises(ModelError, match=pattern) as info:
        build_user_model(f"{path}:Net")
    assert "\n" not in str(info.value)


def test_not_python(tmp_path):
    path = _write(tmp_path, "net.txt", "x = 1\n")
    with pytest.raises(ModelError, match="not a Python file"):
        build_user_model(f"{path}:Net")
