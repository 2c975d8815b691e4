"""`cnnviewer install-desktop [--uninstall]`: a menu entry and icons for this user (freedesktop desktops).

Writes $XDG_DATA_HOME/applications/cnnviewer.desktop (default ~/.local/share) with Exec set to this
installation's own `cnnviewer`, and the icons into $XDG_DATA_HOME/icons/hicolor. Nothing needs root,
and nothing outside those files is touched except the desktops' caches, refreshed when their tools exist.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cnnviewer.cli.common import Parser, UsageError

DESKTOP_FILE = "cnnviewer.desktop"
# Characters that make the Desktop Entry spec require an Exec argument to be quoted.
EXEC_RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer install-desktop",
                    description="Add cnnviewer to this user's application menu (a desktop entry and icons "
                                "under $XDG_DATA_HOME, default ~/.local/share), or remove it with --uninstall.")
    parser.add_argument("--uninstall", action="store_true", help="remove the desktop entry and icons")
    return parser


def data_home() -> Path:
    """$XDG_DATA_HOME, or ~/.local/share when it is unset or relative (the Base Directory spec ignores those)."""
    given = os.environ.get("XDG_DATA_HOME", "")
    return Path(given) if os.path.isabs(given) else Path.home() / ".local" / "share"


def launcher() -> list[str]:
    """The command that starts this installation: its own `cnnviewer` script, as an absolute path.

    Tried in order: the script this process was started as, the one beside this Python (a venv's or
    pipx's bin/), the first `cnnviewer` on PATH, and finally `python -m cnnviewer`.
    """
    started_as = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    candidates = [started_as] if started_as is not None and started_as.name == "cnnviewer" else []
    candidates.append(Path(sys.executable).parent / "cnnviewer")
    on_path = shutil.which("cnnviewer")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [os.path.abspath(candidate)]   # links are kept: pipx's ~/.local/bin/cnnviewer survives upgrades
    return [os.path.abspath(sys.executable), "-m", "cnnviewer"]


def exec_argument(argument: str) -> str:
    """One Exec argument, quoted and escaped as the Desktop Entry spec asks (quoting, then the string escapes)."""
    if any(character in "\n\r" for character in argument):
        raise UsageError(f"cnnviewer install-desktop: {argument!r}: a path with a line break cannot be launched")
    if any(character in EXEC_RESERVED for character in argument):
        argument = '"' + "".join("\\" + c if c in '"`$\\' else c for c in argument) + '"'
    return argument.replace("%", "%%").replace("\\", "\\\\")


def desktop_entry(template: str, command: list[str]) -> str:
    """The template with Exec and TryExec pointing at `command` (which takes one file, %f)."""
    lines = []
    for line in template.splitlines():
        if line.startswith("Exec="):
            line = "Exec=" + " ".join(exec_argument(part) for part in command) + " %f"
        elif line.startswith("TryExec="):
            line = "TryExec=" + command[0].replace("\\", "\\\\")
        lines.append(line)
    return "\n".join(lines) + "\n"


def refresh_caches(home: Path) -> None:
    """Let the desktop see the change now: the MIME cache, and the icon cache where the user already has one."""
    commands = [["update-desktop-database", "-q", str(home / "applications")]]
    theme = home / "icons" / "hicolor"
    if (theme / "icon-theme.cache").exists():   # without a cache GTK reads the folders themselves
        commands.append(["gtk-update-icon-cache", "-q", "-t", "-f", str(theme)])
    for command in commands:
        if shutil.which(command[0]):
            try:
                subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60, check=False)
            except (OSError, subprocess.SubprocessError):
                pass   # a cache is an optimisation: the entry and icons are in place either way


def install(home: Path) -> list[Path]:
    from cnnviewer.engine.media.files import atomic_output
    from cnnviewer.resources import DESKTOP_TEMPLATE, icon_files

    entry = home / "applications" / DESKTOP_FILE
    written = []
    for source, relative in icon_files():
        target = home / "icons" / "hicolor" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(target) as temp:
            shutil.copyfile(source, temp)
        written.append(target)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(entry) as temp:
        temp.write_text(desktop_entry(DESKTOP_TEMPLATE.read_text(encoding="utf-8"), launcher()), encoding="utf-8")
    written.append(entry)
    return written


def uninstall(home: Path) -> list[Path]:
    from cnnviewer.resources import icon_files

    targets = [home / "applications" / DESKTOP_FILE]
    targets += [home / "icons" / "hicolor" / relative for _source, relative in icon_files()]
    removed = []
    for target in targets:
        if target.is_file() or target.is_symlink():
            target.unlink()
            removed.append(target)
    return removed


def run(args: argparse.Namespace) -> int:
    if sys.platform in ("win32", "darwin"):
        raise UsageError("cnnviewer install-desktop: desktop entries are for Linux and other freedesktop "
                         "desktops; start cnnviewer from a terminal here")
    home = data_home()
    try:
        if args.uninstall:
            removed = uninstall(home)
            refresh_caches(home)
            print(f"removed {len(removed)} files under {home}" if removed else f"nothing to remove under {home}")
            return 0
        written = install(home)
    except OSError as error:
        raise UsageError(f"cnnviewer install-desktop: {error.filename or home}: {error.strerror or error}") from None
    refresh_caches(home)
    print(f"installed {written[-1]} (Exec={' '.join(launcher())})")
    print(f"icons: {len(written) - 1} files under {home / 'icons' / 'hicolor'}")
    return 0
