"""Files that ship inside the package: the application icon and the desktop entry template.

Plain paths, no Qt: the window (cnnviewer.ui.app) and `cnnviewer install-desktop` both read them.
The icons are laid out as in a freedesktop icon theme, so they install by copying the tree.
"""

from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent
ICON_THEME = RESOURCES / "icons" / "hicolor"     # <size>x<size>/apps/cnnviewer.png, scalable/apps/cnnviewer.svg
ICON_NAME = "cnnviewer"
ICON_SIZES = (16, 32, 48, 64, 128, 256)
DESKTOP_TEMPLATE = RESOURCES / "cnnviewer.desktop"


def png_icon(size: int) -> Path:
    """The PNG render of the icon at `size` x `size` pixels."""
    return ICON_THEME / f"{size}x{size}" / "apps" / f"{ICON_NAME}.png"


def svg_icon() -> Path:
    return ICON_THEME / "scalable" / "apps" / f"{ICON_NAME}.svg"


def icon_files() -> list[tuple[Path, Path]]:
    """(shipped file, path relative to an icon theme folder such as hicolor/) for every icon."""
    files = [png_icon(size) for size in ICON_SIZES] + [svg_icon()]
    return [(path, path.relative_to(ICON_THEME)) for path in files]
