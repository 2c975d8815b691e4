"""`cnnviewer export top-patches` as a picture a slide can use as it is: a title naming the unit,
each top image with its value and file name under it, each patch with its value (Pillow only)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnviewer.engine.dataset.display import OTHER, PALETTE, colours_for, resampling, value_format

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


def _legend(entries: list[tuple[tuple[int, int, int], str]], width: int, font) -> Image.Image:
    """Swatch + name entries, wrapped between entries (never inside one) to `width` pixels."""
    line, swatch = int(font.getbbox("Hg")[3]) + 6, int(font.getbbox("Hg")[3])
    placed, x, y = [], GAP, GAP
    for colour, text in entries:
        size = swatch + 4 + int(font.getlength(text)) + 3 * GAP
        if x > GAP and x + size > width:
            x, y = GAP, y + line
        placed.append((x, y, colour, text))
        x += size
    legend = Image.new("RGB", (width, y + line + GAP), BACKGROUND)
    draw = ImageDraw.Draw(legend)
    for x, y, colour, text in placed:
        draw.rectangle((x, y + 2, x + swatch - 2, y + swatch), fill=colour)
        draw.text((x + swatch + 4, y), text, fill=TEXT, font=font)
    return legend


def map_sheet(points: np.ndarray, thumbs: np.ndarray, labels: np.ndarray, name, side: int,
              thumb: int) -> np.ndarray:
    """A side x side picture: each thumbnail at its point, framed in its label's colour, all of it
    inside a margin, and a legend (the palette's labels by frequency, then "other") at the bottom."""
    colours, counted = colours_for(labels)
    entries = [(colour, f"{name(label)} ({count})") for (label, count), colour in zip(counted, PALETTE)]
    others = len(labels) - sum(count for _label, count in counted)
    if others:
        entries.append((OTHER, f"other ({others})"))
    legend = _legend(entries, side, _font(max(11, side // 90)))
    height = max(side - legend.height, thumb + 2 * GAP)
    sheet = Image.new("RGB", (side, side), BACKGROUND)
    margin = GAP + 3                                     # a whole frame inside the picture at every edge
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.maximum(high - low, 1e-9)
    x = margin + (points[:, 0] - low[0]) / span[0] * (side - thumb - 2 * margin)
    y = margin + (high[1] - points[:, 1]) / span[1] * (height - thumb - 2 * margin)   # y points up
    draw = ImageDraw.Draw(sheet)
    for left, top, picture, colour in zip(x.astype(int), y.astype(int), thumbs, colours):
        draw.rectangle((left - 2, top - 2, left + thumb + 1, top + thumb + 1), fill=colour)
        small = Image.fromarray(picture).resize((thumb, thumb), resampling(max(picture.shape[:2]), thumb))
        sheet.paste(small, (left, top))
    sheet.paste(legend.crop((0, 0, side, min(legend.height, side - height))), (0, height))
    return np.asarray(sheet)
