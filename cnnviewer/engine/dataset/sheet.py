"""`cnnviewer export top-patches` as a picture a slide can use as it is: a title naming the unit,
each top image with its value and file name under it, each patch with its value (Pillow only)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnviewer.engine.dataset.display import value_format

BACKGROUND = (30, 30, 34)
TEXT = (230, 230, 230)
GAP = 8


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)     # Pillow's own scalable font: no system font needed
    except (TypeError, OSError):                       # an older Pillow: its small bitmap font
        return ImageFont.load_default()


def elided(text: str, font, width: float) -> str:
    """`text` shortened in the middle ("wallpapers_…_1.jpg") until it fits `width` pixels."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        head, tail = text[:(keep + 1) // 2], text[len(text) - keep // 2:]
        if font.getlength(f"{head}…{tail}") <= width:
            return f"{head}…{tail}"
    return "…"


def captions(view) -> list[tuple[str, str]]:
    """(value, file name) of each top image, one format for all values."""
    style = value_format([hit.value for hit in view.images])
    return [(format(hit.value, style), hit.path.name) for hit in view.images]


def _grid(tiles: list[np.ndarray], lines: list[list[str]], columns: int, font) -> Image.Image:
    side = max(max(t.shape[0], t.shape[1]) for t in tiles)
    line = int(font.getbbox("Hg")[3]) + 4
    cell_w, cell_h = side + GAP, side + GAP + line * max(len(text) for text in lines)
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * cell_w + GAP, rows * cell_h + GAP), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, (tile, text) in enumerate(zip(tiles, lines)):
        x, y = GAP + (i % columns) * cell_w, GAP + (i // columns) * cell_h
        sheet.paste(Image.fromarray(tile), (x + (side - tile.shape[1]) // 2, y + (side - tile.shape[0]) // 2))
        for n, words in enumerate(text):
            words = elided(words, font, side)
            draw.text((x + (side - font.getlength(words)) / 2, y + side + 2 + n * line), words, fill=TEXT, font=font)
    return sheet


def top_sheet(view, title: str) -> np.ndarray:
    """The unit's top images (value and name under each) beside their patches (value under each),
    under `title`."""
    font, title_font = _font(13), _font(18)
    columns = max(1, int(np.ceil(np.sqrt(len(view.images)))))
    texts = captions(view)
    parts = [_grid([hit.picture for hit in view.images], [list(t) for t in texts], columns, font)] if texts else []
    patches = [(hit.patch, value) for hit, (value, _name) in zip(view.images, texts) if hit.patch is not None]
    if patches:
        parts.append(_grid([p for p, _v in patches], [[v] for _p, v in patches], columns, font))
    head = int(title_font.getbbox("Hg")[3]) + 2 * GAP
    width = max(sum(p.width for p in parts) + GAP * (len(parts) - 1), int(title_font.getlength(title)) + 2 * GAP)
    height = head + max((p.height for p in parts), default=GAP)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    ImageDraw.Draw(sheet).text((GAP, GAP), title, fill=TEXT, font=title_font)
    x = 0
    for part in parts:
        sheet.paste(part, (x, head))
        x += part.width + GAP
    return np.asarray(sheet)
