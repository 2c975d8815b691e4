"""Render the application icon's PNGs from its SVG (run after editing the SVG, then commit the PNGs).

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/render_icons.py

Writes cnnviewer/resources/icons/hicolor/<N>x<N>/apps/cnnviewer.png for every size the app uses.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the checkout's cnnviewer, not an installed one

from cnnviewer.resources import ICON_SIZES, png_icon, svg_icon  # noqa: E402


def render(svg: Path, size: int, out: Path) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"render_icons: {svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(out), "PNG"):
        raise SystemExit(f"render_icons: could not write {out}")


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])   # noqa: F841 - QPainter needs one
    for size in ICON_SIZES:
        render(svg_icon(), size, png_icon(size))
        print(f"wrote {png_icon(size)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
