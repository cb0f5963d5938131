"""Contact sheets: uint8 images tiled in columns with thin dark gutters, each optionally over
a label band that holds its caption in the 5x7 pixel font of the pattern images.

A sheet is built at the images' own size; a nearest-neighbour upscale of the whole sheet
(`save_png(..., scale=k)`) then scales images, gutters and text alike, so a cell of the
upscaled sheet is exactly the upscaled image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pixelscene.data import pattern_parts

GAP = 2  # pixels between cells
BACKGROUND = 16  # gutters, label bands and empty cells: near black
INK = 224  # label text: light grey
PAD = 2  # pixels of band above, below and left of a label's text
_FONT = pattern_parts.FONTS["thin"]  # (glyphs, 8, 6): 5x7 glyphs and a blank row and column
GLYPH_H, ADVANCE = _FONT.shape[1] - 1, _FONT.shape[2]
LABEL_H = PAD + GLYPH_H + PAD  # a label band's height
_INDEX = {c: i for i, c in enumerate(pattern_parts.CHARS)}
# Punctuation that prompts use and the font lacks, as its glyphs are written: 5-bit rows.
_EXTRA = {",": (0, 0, 0, 0, 12, 4, 8), "'": (12, 4, 8, 0, 0, 0, 0)}
_EXTRA_CELLS = {
    c: np.pad((np.array(rows)[:, None] >> np.arange(4, -1, -1)) & 1, ((0, 1), (0, 1))) > 0
    for c, rows in _EXTRA.items()
}


def sheet_shape(count: int, cell: tuple[int, int], columns: int, gap: int = GAP) -> tuple:
    """(height, width) of a sheet of `count` cells of (height, width) `cell`, `columns` a row."""
    rows = -(-count // columns)
    return rows * cell[0] + (rows - 1) * gap, columns * cell[1] + (columns - 1) * gap


def image_grid(pixels: Sequence[np.ndarray], cols: int = 4, gap: int = GAP) -> np.ndarray:
    """Tile uint8 (H, W, 3) images into one sheet, `cols` per row, with dark gaps."""
    h, w, _ = pixels[0].shape
    sheet = np.full((*sheet_shape(len(pixels), (h, w), cols, gap), 3), BACKGROUND, np.uint8)
    for i, img in enumerate(pixels):
        r, c = divmod(i, cols)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = img
    return sheet


def label_chars(width: int) -> int:
    """How many characters of a label fit a band `width` pixels wide."""
    return max(0, (width - 2 * PAD + 1) // ADVANCE)  # the last glyph's blank column may go


def fit_label(text: str, width: int) -> str:
    """A label on one line (runs of white space as one space), cut to fit with '..' when
    it is longer than `width` allows."""
    text = " ".join(text.split())
    room = label_chars(width)
    if len(text) <= room:
        return text
    return text[: max(room - 2, 0)].rstrip() + ".."[:room]


def _cell(char: str) -> np.ndarray:
    """A character's glyph with its blank row and column; '?' for one the font lacks."""
    if char in _EXTRA_CELLS:
        return _EXTRA_CELLS[char]
    return _FONT[_INDEX.get(char, _INDEX["?"])]


def label_band(text: str, width: int) -> np.ndarray:
    """uint8 (LABEL_H, width, 3): `text` fitted to the width, in INK on BACKGROUND."""
    band = np.full((LABEL_H, width, 3), BACKGROUND, np.uint8)
    text = fit_label(text, width)
    if text:
        mask = np.concatenate([_cell(c) for c in text], axis=1)[:GLYPH_H, :-1]
        band[PAD : PAD + GLYPH_H, PAD : PAD + mask.shape[1]][mask] = INK
    return band


def labelled_grid(
    pixels: Sequence[np.ndarray], labels: Sequence[str] | None = None, columns: int = 4
) -> np.ndarray:
    """Tile uint8 (H, W, 3) images, each over its label when `labels` are given; at most
    as many columns as images."""
    if labels is not None:
        pixels = [
            np.concatenate([img, label_band(text, img.shape[1])])
            for img, text in zip(pixels, labels, strict=True)
        ]
    return image_grid(pixels, min(columns, len(pixels)))
