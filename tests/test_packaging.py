"""Packaging: the icon, the desktop entry, `cnnviewer install-desktop`, and what a wheel carries.

Nothing here downloads anything: the wheel is built without build isolation from the venv's own
setuptools, and desktop-file-validate (Debian's desktop-file-utils, installed by packaging/setup.sh)
is skipped only where it is absent.
"""

from __future__ import annotations

import importlib.util
import mimetypes
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnviewer import resources
from cnnviewer.cli.install_desktop import exec_argument
from cnnviewer.engine.media.images import IMAGE_SUFFIXES
from cnnviewer.resources import ICON_SIZES, ICON_THEME, icon_files, png_icon, svg_icon

ROOT = Path(__file__).resolve().parent.parent
DESKTOP_TEMPLATE = resources.DESKTOP_TEMPLATE
VALIDATOR = shutil.which("desktop-file-validate")
needs_validator = pytest.mark.skipif(VALIDATOR is None, reason="desktop-file-validate absent (desktop-file-utils)")


def entry(path: Path) -> dict[str, str]:
    """The [Desktop Entry] group's keys and values."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[Desktop Entry]"
    return dict(line.split("=", 1) for line in lines[1:] if line and not line.startswith("#"))


def validate(path: Path) -> None:
    """desktop-file-validate finds nothing to say: no error, no warning, not even a hint."""
    result = subprocess.run([VALIDATOR, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def install_desktop(data_home: Path, *args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `cnnviewer install-desktop` as a user would, and report whether it loaded torch or Qt."""
    code = ("import sys\nfrom cnnviewer.cli import main\ncode = main(sys.argv[1:])\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'PySide6') if m in sys.modules), file=sys.stderr)\n"
            "sys.exit(code)")
    command = launcher or [sys.executable, "-c", code]
    env = dict(os.environ, XDG_DATA_HOME=str(data_home))
    return subprocess.run([*command, "install-desktop", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT)


@needs_validator
def test_desktop_template_is_valid():
    validate(DESKTOP_TEMPLATE)
    validate(ROOT / "packaging" / "cnnviewer.desktop")   # the packagers' copy is the shipped template itself
    assert (ROOT / "packaging" / "cnnviewer.desktop").read_bytes() == DESKTOP_TEMPLATE.read_bytes()


def test_desktop_template_names_the_icon_window_class_and_image_types():
    keys = entry(DESKTOP_TEMPLATE)
    assert keys["Icon"] == "cnnviewer" and keys["StartupWMClass"] == "cnnviewer"   # Qt's WM_CLASS class
    assert keys["Exec"] == "cnnviewer %f" and keys["Terminal"] == "false"   # the window opens one image
    opened = {mimetypes.guess_type(f"x{suffix}")[0] for suffix in IMAGE_SUFFIXES}
    assert set(keys["MimeType"].rstrip(";").split(";")) == opened


def test_install_desktop_writes_the_entry_and_every_icon_and_uninstall_removes_them(tmp_path):
    result = install_desktop(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr   # neither torch nor Qt loaded
    desktop = tmp_path / "applications" / "cnnviewer.desktop"
    keys = entry(desktop)
    program, file_code = keys["Exec"].rsplit(" ", 1)
    assert file_code == "%f" and os.path.isabs(program) and os.access(program, os.X_OK), keys["Exec"]
    assert keys["TryExec"] == program and keys["Icon"] == "cnnviewer"
    for source, relative in icon_files():
        installed = tmp_path / "icons" / "hicolor" / relative
        assert installed.read_bytes() == source.read_bytes(), relative
    assert {p.parent.parent.name for p in (tmp_path / "icons" / "hicolor").glob("*/apps/cnnviewer.*")} == \
        {f"{n}x{n}" for n in ICON_SIZES} | {"scalable"}
    if VALIDATOR:
        validate(desktop)

    assert install_desktop(tmp_path).returncode == 0   # again: replaces, never fails on what is there
    removed = install_desktop(tmp_path, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not list(tmp_path.rglob("cnnviewer.*")), list(tmp_path.rglob("cnnviewer.*"))
    again = install_desktop(tmp_path, "--uninstall")
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_exec_points_at_the_script_it_was_started_as_quoted_when_the_path_has_spaces(tmp_path):
    script = Path(sys.executable).parent / "cnnviewer"
    if not script.is_file():
        pytest.skip("no cnnviewer script beside this Python (not installed)")
    folder = tmp_path / "my apps"
    folder.mkdir()
    (folder / "cnnviewer").symlink_to(script)
    result = install_desktop(tmp_path / "data", launcher=[str(folder / "cnnviewer")])
    assert result.returncode == 0, result.stderr
    desktop = tmp_path / "data" / "applications" / "cnnviewer.desktop"
    assert entry(desktop)["Exec"] == f'"{folder / "cnnviewer"}" %f'
    if VALIDATOR:
        validate(desktop)


def test_exec_arguments_are_quoted_and_escaped_as_the_spec_asks():
    assert exec_argument("/usr/bin/cnnviewer") == "/usr/bin/cnnviewer"
    assert exec_argument("/opt/my apps/cnnviewer") == '"/opt/my apps/cnnviewer"'
    # quoting escapes $ and \ with a backslash, then the string escape doubles every backslash; % doubles
    assert exec_argument("/a b/$x\\y%") == r'"/a b/\\$x\\\\y%%"'


def test_install_desktop_into_a_place_it_cannot_write_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = install_desktop(blocker)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 2   # + the probe


def test_png_icons_have_the_sizes_their_folders_name():
    found = sorted(ICON_THEME.glob("*/apps/cnnviewer.png"))
    sizes = set()
    for path in found:
        width, height = map(int, re.fullmatch(r"(\d+)x(\d+)", path.parent.parent.name).groups())
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (width, height) and image.mode == "RGBA", path
            alpha = np.asarray(image)[..., 3]
        assert alpha.min() == 0 and alpha.max() == 255, path   # transparent corners, an opaque body
        sizes.add(width)
    assert sizes == set(ICON_SIZES)


def test_png_icons_are_renders_of_the_svg(qapp, tmp_path):
    """packaging/render_icons.py renders what is committed: regenerate the PNGs after editing the SVG."""
    spec = importlib.util.spec_from_file_location("render_icons", ROOT / "packaging" / "render_icons.py")
    render_icons = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_icons)
    for size in (16, 64, 256):
        render_icons.render(svg_icon(), size, tmp_path / f"{size}.png")
        fresh = np.asarray(Image.open(tmp_path / f"{size}.png").convert("RGBA"), dtype=np.int16)
        shipped = np.asarray(Image.open(png_icon(size)).convert("RGBA"), dtype=np.int16)
        assert np.abs(fresh - shipped).mean() < 2.0, size   # identical but for another Qt's antialiasing


def test_app_icon_holds_every_size(qapp):
    from cnnviewer.ui.app import app_icon

    icon = app_icon()
    assert not icon.isNull()
    assert {(s.width(), s.height()) for s in icon.availableSizes()} == {(n, n) for n in ICON_SIZES}
    for size in ICON_SIZES:
        assert icon.pixmap(size, size).width() == size


def test_identity_names_the_app_without_moving_its_settings(qapp):
    from importlib.metadata import version

    from PySide6.QtCore import QSettings

    from cnnviewer.ui.app import set_identity

    saved = (qapp.applicationName(), qapp.organizationName(), qapp.applicationVersion(), qapp.desktopFileName())
    before = QSettings("cnnviewer", "cnnviewer").fileName()
    try:
        set_identity(qapp)
        assert QSettings("cnnviewer", "cnnviewer").fileName() == before   # users' settings stay where they were
        assert QSettings().fileName() == before
        assert qapp.applicationName() == "cnnviewer" and qapp.desktopFileName() == "cnnviewer"
        assert qapp.applicationVersion() == version("cnnviewer")
        assert {(s.width(), s.height()) for s in qapp.windowIcon().availableSizes()} >= {(16, 16), (256, 256)}
    finally:
        name, organisation, app_version, desktop = saved
        qapp.setApplicationName(name)
        qapp.setOrganizationName(organisation)
        qapp.setApplicationVersion(app_version)
        qapp.setDesktopFileName(desktop)


def test_app_module_stays_torch_free():
    code = "import sys, cnnviewer.ui.app\nprint(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_wheel_carries_the_icons_the_desktop_entry_and_the_command(tmp_path):
    """Built from a copy of the sources with this venv's setuptools: no isolation, no index, no download."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "cnnviewer", source / "cnnviewer", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "dist"), str(source)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("cnnviewer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"cnnviewer/resources/{p.relative_to(DESKTOP_TEMPLATE.parent).as_posix()}"
               for p, _relative in icon_files()}
    assert shipped | {"cnnviewer/resources/cnnviewer.desktop", "cnnviewer/cli/install_desktop.py"} <= names
    modules = {path.relative_to(source).as_posix() for path in (source / "cnnviewer").rglob("*.py")}
    assert not modules - names, f"left out of the wheel: {sorted(modules - names)}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "cnnviewer = cnnviewer.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
