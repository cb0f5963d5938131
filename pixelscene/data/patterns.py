"""Procedural pixel-art material beside the scenes: tilemaps, sprites, UI, text, dithering.

`render_pattern(rng)` draws one 320x200 image in a random palette of 2-64 6-bit DAC colours:
a layout (a tilemap with sprites and a status bar, a side view with parallax bands and
platforms, menu windows, a sprite sheet, a title screen, or a collage of regions) drawn at
1x, 2x, 3x or 4x and scaled up by whole pixels. It exists so that an image tokenizer learns
pixel art in general, not only the scenes of `render.py`; everything it draws has hard edges.
"""

from __future__ import annotations

import numpy as np

from pixelscene.data import pattern_parts as pp
from pixelscene.data.canvas import H, W
from pixelscene.data.pattern_layers import (
    box_in,
    checker_floor,
    gradient,
    iso_floor,
    parallax,
    raster_bars,
    scatter,
    shapes,
    sprite_set,
    text_rows,
    tilemap,
    window,
)
from pixelscene.data.pattern_palette import Colors, make_palette
from pixelscene.data.vga import DAC_LEVELS

SCALES, SCALE_P = (1, 2, 3, 4), (0.5, 0.36, 0.07, 0.07)
LAYOUTS = ("map", "side", "menu", "sheet", "title", "collage")
LAYOUT_P = (0.22, 0.2, 0.16, 0.1, 0.1, 0.22)


def _hud(rng, c, col: Colors, top: bool) -> None:
    h, w = c.shape
    bh = int(rng.integers(12, 26))
    y0 = 0 if top else h - bh
    window(rng, c, col, 0, y0, w, y0 + bh, rng.choice(["text", "bars"]))


def layout_map(rng, c, col: Colors) -> None:
    """A top-down tilemap with creatures and items on it, a status bar, maybe a dialog."""
    h, w = c.shape
    if rng.random() < 0.3 and w >= 120:  # a side panel of gauges, slots or a portrait
        pw = int(rng.integers(w // 5, w // 3))
        left = rng.random() < 0.3
        window(rng, c, col, 0 if left else w - pw, 0, pw if left else w, h)
        c = c[:, pw:] if left else c[:, : w - pw]
        h, w = c.shape
    if rng.random() < 0.2:
        iso_floor(rng, c, col)
        t, oy, ox, density = 16, 0, 0, 0.0
    else:
        t, oy, ox = tilemap(rng, c, col)
        density = rng.uniform(0.03, 0.25)
    decor = sprite_set(rng, col, int(rng.integers(1, 5)), max(5, t - 2), 2 * t)
    rows, cols = np.nonzero(rng.random((h // t + 2, w // t + 2)) < density)
    for y, x in zip(rows * t - oy, cols * t - ox, strict=True):
        s = decor[rng.integers(len(decor))]
        pp.paste(c, s, x + (t - s.shape[1]) // 2, y + t - s.shape[0])
    sprites = sprite_set(rng, col, int(rng.integers(1, 6)), 6, min(24, h // 3))
    scatter(rng, c, sprites, int(rng.integers(2, 25)))
    if rng.random() < 0.5:
        _hud(rng, c, col, rng.random() < 0.5)
    if rng.random() < 0.25 and h >= 60:
        window(rng, c, col, 4, h * 2 // 3, w - 4, h - 4, "text")


def layout_side(rng, c, col: Colors) -> None:
    """A side view: parallax bands, floating platforms, sprites on the ground, a score line."""
    h, w = c.shape
    gy = parallax(rng, c, col)
    tile = pp.make_tile(rng, rng.choice(["bricks", "panel", "stone", "planks"]), 8, col.ramp(3))
    for _ in range(int(rng.integers(0, 5))):
        n, x, y = int(rng.integers(2, 8)), int(rng.integers(-8, w)), int(rng.integers(h // 4, gy))
        pp.paste(c, np.tile(tile, (1, n)), x, y)
    sprites = sprite_set(rng, col, int(rng.integers(1, 5)), 8, min(32, h // 3))
    scatter(rng, c, sprites, int(rng.integers(1, 6)), gy)
    scatter(rng, c, sprites, int(rng.integers(0, 4)))
    if rng.random() < 0.6:
        text_rows(rng, c, 4, 3, w - 4, 10, col.light, col.dark, rng.choice(["thin", "bold"]))


def layout_menu(rng, c, col: Colors) -> None:
    """UI windows over a background: text, bars, inventory slots, buttons, portraits."""
    h, w = c.shape
    rng.choice([gradient, tilemap, lambda r, c, col: c.fill(col.pick())])(rng, c, col)
    for _ in range(int(rng.integers(1, 4))):
        window(rng, c, col, *box_in(rng, h, w, min(40, h), min(60, w)))
    if rng.random() < 0.5:
        arrow = np.tril(np.ones((7, 4), bool))[::-1] & np.tril(np.ones((7, 4), bool))
        pp.paint(c, arrow, int(rng.integers(0, w - 4)), int(rng.integers(0, h - 7)), col.light)


def layout_sheet(rng, c, col: Colors) -> None:
    """A sprite sheet, tile set or font chart on a grid."""
    h, w = c.shape
    c.fill(col.pick())
    what = rng.choice(["sprites", "tiles", "glyphs"])
    cell = int(rng.integers(10, 44)) if what == "sprites" else int(rng.choice([8, 9, 16, 18]))
    gap = int(rng.integers(0, 4))
    if what == "glyphs":
        font = rng.choice(list(pp.FONTS))
        text_rows(rng, c, 2, 2, w - 2, h - 2, col.contrast(int(c[0, 0])), font=font)
        return
    sprites = sprite_set(rng, col, int(rng.integers(4, 16)), max(5, cell - 8), cell - 2)
    ink = col.contrast(int(c[0, 0]))
    for y in range(2, h - cell + 1, cell + gap):
        for x in range(2, w - cell + 1, cell + gap):
            if what == "tiles":
                t = 8 if cell < 16 else 16
                kind = rng.choice(pp.TILE_KINDS)
                pp.paste(c, pp.make_tile(rng, kind, t, col.ramp(int(rng.integers(3, 5)))), x, y)
            else:
                s = sprites[rng.integers(len(sprites))]
                pp.paste(c, s, x + (cell - s.shape[1]) // 2, y + (cell - s.shape[0]) // 2)
            if gap and rng.random() < 0.3:
                pp.box(c, x - 1, y - 1, x + cell + 1, y + cell + 1, ink)


def layout_title(rng, c, col: Colors) -> None:
    """A title screen: banded backdrop, a big outlined title, menu lines, a few sprites."""
    h, w = c.shape
    gradient(rng, c, col)
    backdrop = rng.choice(["plain", "bars", "floor"])
    if backdrop == "bars":
        raster_bars(rng, c, col)
    elif backdrop == "floor":
        checker_floor(rng, c, col)
    if rng.random() < 0.4:  # a starfield
        n = int(h * w * rng.uniform(0.002, 0.02))
        c[rng.integers(0, h, n), rng.integers(0, w, n)] = col.ramp(2)[rng.integers(0, 2, n)]
    font = rng.choice(["thin", "bold", "runes"])
    n = int(rng.integers(3, 11))
    m = pp.text_mask(pp.random_text(rng, n, font), font)
    s = int(max(1, min(rng.integers(2, 6), (w - 8) // m.shape[1], h // 3 // m.shape[0])))
    m = m.repeat(s, 0).repeat(s, 1)
    tx, ty = (w - m.shape[1]) // 2, int(rng.integers(2, max(3, h // 3)))
    pp.paint(
        c, pp.dilate(pp.dilate(m)) if rng.random() < 0.5 else pp.dilate(m), tx - 2, ty - 2, col.dark
    )
    inside = pp.dither(
        np.linspace(0, 1, m.shape[0])[:, None],
        col.ramp(3),
        m.shape,
        rng.choice(pp.DITHERS),
        float(rng.choice([1, 3])),
    )
    pp.paste(c, np.where(m, inside, pp.CLEAR), tx, ty)
    y = ty + m.shape[0] + 8
    for _ in range(int(rng.integers(1, 5))):
        k = int(rng.integers(3, 14))
        line = pp.text_mask(pp.random_text(rng, k), "thin")
        pp.paint(c, line, (w - line.shape[1]) // 2, y, col.light)
        y += 10
    scatter(rng, c, sprite_set(rng, col, 2, 8, min(32, h // 3)), int(rng.integers(0, 4)))


def _split(rng, x0, y0, x1, y1, depth: int, first=True) -> list[tuple[int, int, int, int]]:
    """Cut a box in two, and the parts again, at most `depth` times deep: a screen's regions."""
    small = x1 - x0 < 48 and y1 - y0 < 48
    if depth == 0 or small or (not first and rng.random() < 0.25):
        return [(x0, y0, x1, y1)]
    if x1 - x0 > y1 - y0:
        m = int(rng.integers(x0 + (x1 - x0) // 4, x0 + 3 * (x1 - x0) // 4 + 1))
        a, b = (x0, y0, m, y1), (m, y0, x1, y1)
    else:
        m = int(rng.integers(y0 + (y1 - y0) // 4, y0 + 3 * (y1 - y0) // 4 + 1))
        a, b = (x0, y0, x1, m), (x0, m, x1, y1)
    return _split(rng, *a, depth - 1, False) + _split(rng, *b, depth - 1, False)


def layout_collage(rng, c, col: Colors) -> None:
    """Rectangular regions, each drawn with a different piece, with borders between them."""
    h, w = c.shape
    border = col.pick() if rng.random() < 0.7 else None
    for x0, y0, x1, y1 in _split(rng, 0, 0, w, h, int(rng.integers(1, 5))):
        view = c[y0:y1, x0:x1]
        kind = rng.choice(
            ["tiles", "gradient", "text", "sprites", "window", "parallax"],
            p=[0.24, 0.16, 0.1, 0.2, 0.12, 0.18],
        )
        if kind == "tiles":
            tilemap(rng, view, col)
        elif kind == "gradient":
            gradient(rng, view, col, y0, x0)
        elif kind == "text":
            view.fill(col.pick())
            text_rows(rng, view, 2, 2, x1 - x0 - 2, y1 - y0 - 2, col.contrast(int(view[0, 0])))
        elif kind == "sprites":
            view.fill(col.pick())
            size = min(40, y1 - y0, x1 - x0)
            scatter(rng, view, sprite_set(rng, col, 3, 5, size), int(rng.integers(1, 12)))
        elif kind == "window":
            view.fill(col.pick())
            window(rng, view, col, 0, 0, x1 - x0, y1 - y0)
        else:
            parallax(rng, view, col) if min(y1 - y0, x1 - x0) >= 32 else gradient(rng, view, col)
        if border is not None:
            pp.box(c, x0 - 1, y0 - 1, x1 + 1, y1 + 1, border)


LAYOUT_FNS = {"map": layout_map, "side": layout_side, "menu": layout_menu,
              "sheet": layout_sheet, "title": layout_title, "collage": layout_collage}  # fmt: skip


def pattern_with_info(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """(uint8 (200, 320, 3) image, {"layout", "scale", "colors"}) drawn from rng alone."""
    scale = int(rng.choice(SCALES, p=SCALE_P))
    colors, ramps = make_palette(rng)
    col = Colors(rng, colors, ramps)
    h, w = -(-H // scale), -(-W // scale)
    c = np.full((h, w), col.pick(), np.uint8)
    layout = str(rng.choice(LAYOUTS, p=LAYOUT_P))
    LAYOUT_FNS[layout](rng, c, col)
    if rng.random() < 0.3:
        shapes(rng, c, col, int(rng.integers(1, 8)))
    used = np.bincount(c.ravel(), minlength=col.n) > 0
    if used.sum() < 2:  # a flat picture still gets a frame in another colour
        pp.box(c, 0, 0, w, h, int(np.flatnonzero(~used)[0]))
        used = np.bincount(c.ravel(), minlength=col.n) > 0
    img = c.repeat(scale, 0).repeat(scale, 1)[:H, :W]
    rgb = DAC_LEVELS[colors][img]
    return rgb, {"layout": layout, "scale": scale, "colors": int(used.sum()), "palette": col.n}


def render_pattern(rng: np.random.Generator) -> np.ndarray:
    """A uint8 (200, 320, 3) pixel-art image in 2-64 VGA DAC colours, from rng alone."""
    return pattern_with_info(rng)[0]
