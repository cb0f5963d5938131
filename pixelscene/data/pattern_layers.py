"""Regions of the pattern images (`pixelscene.data.patterns`): dithered gradients, scrolled
tilemaps, parallax bands, raster bars, a checker floor, sprite sets, text rows, UI windows,
lines and rectangles. Each draws palette indices into a canvas or a view of one."""

from __future__ import annotations

import numpy as np

from pixelscene.data import pattern_parts as pp
from pixelscene.data.pattern_palette import Colors


def gradient(rng, c: np.ndarray, col: Colors, y0: int = 0, x0: int = 0) -> None:
    """Fill with a dithered gradient: vertical, horizontal, radial or diagonal bands."""
    h, w = c.shape
    shades = col.ramp(int(rng.integers(2, 11)))[:: int(rng.choice([1, -1]))]
    y, x = np.arange(h)[:, None] / max(h - 1, 1), np.arange(w)[None, :] / max(w - 1, 1)
    shape = rng.choice(["v", "v", "v", "h", "radial", "diag"])
    if shape == "v":
        t = y
    elif shape == "h":
        t = x
    elif shape == "radial":
        cy, cx = rng.random(2)
        t = np.sqrt((y - cy) ** 2 + ((x - cx) * w / h) ** 2) / rng.uniform(0.5, 1.5)
    else:
        t = (x + y) / 2
    sharp = float(rng.choice([1, 2, 3, 5, 8]))
    c[...] = pp.dither(t, shades, (h, w), rng.choice(pp.DITHERS), sharp, y0, x0)


def tilemap(rng, c: np.ndarray, col: Colors, t: int | None = None, layout=None) -> tuple:
    """Fill with 2-5 kinds of tile on a scrolled grid; returns (tile size, scroll y, x)."""
    h, w = c.shape
    t = t or (int(rng.choice([8, 16])) if min(h, w) >= 64 else 8)
    kinds = rng.choice(pp.TILE_KINDS, int(rng.integers(2, 6)), replace=False)
    tiles = np.stack([pp.make_tile(rng, k, t, col.ramp(int(rng.integers(3, 7)))) for k in kinds])
    n = len(tiles)
    gh, gw = h // t + 2, w // t + 2
    layout = layout or rng.choice(["blobs", "rooms", "layers", "scatter"])
    if layout == "blobs":
        b = int(rng.integers(2, 6))
        grid = rng.integers(0, n, (gh // b + 1, gw // b + 1)).repeat(b, 0).repeat(b, 1)[:gh, :gw]
    elif layout == "rooms":
        grid = np.zeros((gh, gw), int)
        for _ in range(int(rng.integers(1, 5))):
            y0, x0 = rng.integers(0, gh - 2), rng.integers(0, gw - 2)
            y1, x1 = y0 + rng.integers(3, gh + 1), x0 + rng.integers(3, gw + 1)
            grid[y0:y1, x0:x1] = 0
            grid[y0:y1, [x0, min(x1, gw) - 1]] = 1
            grid[[y0, min(y1, gh) - 1], x0:x1] = 1
            grid[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = rng.integers(0, n) if n > 2 else 0
        grid[rng.random((gh, gw)) < 0.05] = n - 1
    elif layout in ("layers", "ground"):
        steps = rng.integers(-1, 2, gw) * (rng.random(gw) < 0.25)
        surf = np.clip(int(rng.integers(gh // 4, 3 * gh // 4 + 1)) + np.cumsum(steps), 1, gh - 1)
        surf = np.zeros(gw, int) if layout == "ground" else surf
        rows = np.arange(gh)[:, None]
        grid = np.where(rows < surf, -1, np.where(rows == surf, 0, 1 + (rows > surf + 1) * (n > 2)))
    else:
        grid = np.where(rng.random((gh, gw)) < 0.85, 0, rng.integers(0, n, (gh, gw)))
    tiles = np.concatenate([tiles, np.full((1, t, t), pp.CLEAR, np.uint8)])
    img = pp.tile_image(tiles, np.where(grid < 0, n, grid))
    oy, ox = int(rng.integers(0, t)) * (layout != "ground"), int(rng.integers(0, t))
    img = img[oy : oy + h, ox : ox + w]
    np.copyto(c, img, where=img != pp.CLEAR)
    return t, oy, ox


def _profile(rng, w: int, base: float, amp: float) -> np.ndarray:
    """A stepped skyline: jagged peaks, rounded hills or a block city."""
    x = np.arange(w)
    kind = rng.choice(["jagged", "round", "city"])
    if kind == "city":
        widths = rng.integers(4, 20, w // 4 + 2)
        y = np.repeat(rng.uniform(0, amp, len(widths)), widths)[:w]
    else:
        y = np.zeros(w)
        for octave in range(3):
            period = rng.uniform(60, 160) / 2**octave * w / 320
            ph = rng.uniform(0, period)
            wave = np.abs((x + ph) / period % 1 - 0.5) * 2 if kind == "jagged" else (
                np.sin((x + ph) / period * 2 * np.pi) + 1) / 2  # fmt: skip
            y += amp * wave / 1.8**octave
    step = int(rng.choice([1, 2, 4]))
    return (base - np.repeat(y[::step], step)[:w]).astype(int)


def iso_floor(rng, c: np.ndarray, col: Colors) -> None:
    """An isometric floor of 2:1 diamond tiles in a few colours, outlined, some speckled."""
    h, w = c.shape
    t = int(rng.choice([4, 6, 8, 12]))  # a diamond is 4t wide and 2t tall
    y, x = np.mgrid[:h, :w]
    u, v = (y + x // 2 + 1000 * t) // (2 * t), (y - x // 2 + 1000 * t) // (2 * t)
    shades = col.ramp(int(rng.integers(2, 6)))
    kinds = rng.integers(0, len(shades), (64, 64))
    kinds[rng.random((64, 64)) < rng.uniform(0.4, 0.9)] = 0
    c[...] = shades[kinds[u % 64, v % 64]]
    edge = ((y + x // 2) % (2 * t) == 0) | ((y - x // 2) % (2 * t) == 0)
    c[edge] = col.dark if rng.random() < 0.6 else shades[0]
    if rng.random() < 0.5:
        c[(rng.random((h, w)) < 0.06) & ~edge] = col.ramp(1)[0]


def parallax(rng, c: np.ndarray, col: Colors) -> int:
    """Sky bands, 1-3 silhouette layers, clouds and a tiled ground; returns the ground row."""
    h, w = c.shape
    gradient(rng, c, col) if rng.random() < 0.8 else c.fill(col.pick())
    rows = np.arange(h)[:, None]
    shades = col.ramp(4)[:: int(rng.choice([1, -1]))]
    for i in range(int(rng.integers(1, 4))):
        prof = _profile(rng, w, h * (0.45 + 0.13 * i), h * rng.uniform(0.1, 0.3))
        below = rows >= prof
        c[below] = shades[i]
        c[(rows == prof) & below] = shades[min(i + 1, 3)]
        if rng.random() < 0.4:  # a dithered shadow under the ridge
            t = (rows - prof) / (h * 0.2)
            dark = pp.dither(1 - t, [shades[i], shades[max(i - 1, 0)]], (h, w), "checker", 4)
            c[below] = dark[below]
    for _ in range(int(rng.integers(0, 5))):
        cw, ch = int(rng.integers(8, 40)), int(rng.integers(3, 10))
        cy, cx = int(rng.integers(0, h // 3)), int(rng.integers(-cw // 2, w))
        y, x = np.mgrid[:ch, :cw] + 0.5
        cloud = ((x - cw / 2) / (cw / 2)) ** 2 + ((y - ch) / ch) ** 2 <= 1
        pp.paint(c, cloud, cx, cy, col.light)
    gy = h - int(rng.integers(1, 4)) * 8 - int(rng.integers(0, 8))
    tilemap(rng, c[gy:], col, 8, "ground")
    return gy


def raster_bars(rng, c: np.ndarray, col: Colors) -> None:
    """Horizontal bars shaded dark-light-dark, as a demo's copper bars."""
    h, w = c.shape
    for _ in range(int(rng.integers(2, 8))):
        shades = col.ramp(int(rng.integers(3, 7)))
        band = np.concatenate([shades, shades[-2::-1]]).repeat(int(rng.integers(1, 3)))
        y = int(rng.integers(-len(band) // 2, h))
        part = band[: max(0, min(len(band), h - y))][max(0, -y) :]
        c[max(y, 0) : max(y, 0) + len(part)] = part[:, None]


def checker_floor(rng, c: np.ndarray, col: Colors) -> None:
    """A checkerboard plane running to a horizon, hard-edged."""
    h, w = c.shape
    hz = int(h * rng.uniform(0.4, 0.75))
    y = np.arange(hz + 1, h)[:, None] - hz
    z = h * rng.uniform(2, 6) / y
    u = (np.arange(w)[None, :] - w / 2) / y * rng.uniform(0.3, 1.0)
    a, b = col.ramp(2) if rng.random() < 0.5 else (col.pick(), col.pick())
    c[hz + 1 :] = np.where((np.floor(u) + np.floor(z / 8)) % 2 == 0, a, b)


def sprite_set(rng, col: Colors, n: int, lo: int, hi: int) -> list[np.ndarray]:
    """n different sprites, lo-hi px tall, each in 2-4 shades of one ramp."""
    out = []
    for _ in range(n):
        h = int(rng.integers(lo, max(hi, lo) + 1))
        w = int(np.clip(h * rng.uniform(0.6, 1.3), 5, 40))
        shades = col.ramp(int(rng.integers(2, 5)))
        outline = col.dark if rng.random() < 0.75 else int(shades[0])
        out.append(pp.make_sprite(rng, h, w, shades, outline, col.light))
    return out


def scatter(rng, c: np.ndarray, sprites: list, count: int, ground: int | None = None) -> None:
    """Paste `count` sprites (some mirrored) at any pixel offset, or standing on a ground row."""
    h, w = c.shape
    for _ in range(count):
        s = sprites[rng.integers(len(sprites))]
        s = s[:, ::-1] if rng.random() < 0.5 else s
        sh, sw = s.shape
        x = int(rng.integers(-sw // 2, w - sw // 2))
        y = ground - sh + 1 if ground is not None else int(rng.integers(-sh // 2, h - sh // 2))
        pp.paste(c, s, x, y)


def text_rows(rng, c, x0, y0, x1, y1, ink, shadow=None, font=None) -> None:
    """Rows of random words in one font filling a box, optionally with a drop shadow."""
    font = font or rng.choice(["thin", "thin", "bold", "tall", "runes"])
    ch, cw = pp.FONTS[font].shape[1:]
    n, y, gap = (x1 - x0) // cw, y0, int(rng.integers(0, 4))
    while y + ch - 1 <= y1 and n > 0:
        m = pp.text_mask(pp.random_text(rng, int(rng.integers(max(1, n // 3), n + 1)), font), font)
        if shadow is not None:
            pp.paint(c, m, x0 + 1, y + 1, shadow)
        pp.paint(c, m, x0, y, ink)
        y += ch + gap


def window(rng, c, col: Colors, x0: int, y0: int, x1: int, y1: int, content=None) -> None:
    """A framed UI window (bevelled, double-lined, flat or gradient) with something inside."""
    dark, face, light = (int(v) for v in col.ramp(3))
    style = rng.choice(["bevel", "double", "flat", "gradient"])
    if style == "bevel":
        pp.bevel(c, x0, y0, x1, y1, face, light, dark, col.dark if rng.random() < 0.7 else None)
    else:
        pp.rect(c, x0, y0, x1, y1, face)
        if style == "gradient" and x1 > x0 and y1 > y0:
            view = c[max(y0, 0) : y1, max(x0, 0) : x1]
            t = np.linspace(0, 1, view.shape[0])[:, None]
            view[...] = pp.dither(t, col.ramp(3)[::-1], view.shape, rng.choice(pp.DITHERS), 3)
        pp.box(c, x0, y0, x1, y1, col.contrast(face) if style == "flat" else col.dark)
        if style != "flat":
            pp.box(c, x0 + 1, y0 + 1, x1 - 1, y1 - 1, light)
    ink = col.contrast(face)
    ix0, iy0, ix1, iy1 = x0 + 4, y0 + 4, x1 - 4, y1 - 4
    if rng.random() < 0.35 and iy1 - iy0 > 24:
        pp.rect(c, x0 + 2, y0 + 2, x1 - 2, y0 + 12, dark)
        text_rows(rng, c, x0 + 4, y0 + 3, x1 - 4, y0 + 10, col.contrast(dark), font="thin")
        iy0 += 10
    content = content or rng.choice(["text", "bars", "slots", "buttons", "portrait"])
    if content == "bars":
        y = iy0
        while y + 7 <= iy1:
            text_rows(rng, c, ix0, y, ix0 + 24, y + 7, ink, font="thin")
            bx0, fill = ix0 + 26, int(rng.integers(0, 101))
            pp.box(c, bx0, y, ix1, y + 7, col.dark)
            pp.rect(c, bx0 + 1, y + 1, bx0 + 1 + (ix1 - bx0 - 2) * fill // 100, y + 6, col.pick())
            y += 10
    elif content == "slots":
        s = int(rng.integers(10, 22))
        icons = sprite_set(rng, col, int(rng.integers(1, 5)), max(5, s - 6), s - 4)
        for sy in range(iy0, iy1 - s + 1, s + 2):
            for sx in range(ix0, ix1 - s + 1, s + 2):
                pp.bevel(c, sx, sy, sx + s, sy + s, dark, light, col.dark, sunken=True)
                if rng.random() < 0.6:
                    icon = icons[rng.integers(len(icons))]
                    pp.paste(c, icon, sx + (s - icon.shape[1]) // 2, sy + (s - icon.shape[0]) // 2)
    elif content == "buttons":
        bw, bh = int(rng.integers(24, 48)), int(rng.integers(11, 16))
        for by in range(iy0, iy1 - bh + 1, bh + 3):
            for bx in range(ix0, ix1 - bw + 1, bw + 3):
                pp.bevel(
                    c, bx, by, bx + bw, by + bh, face, light, dark, col.dark, rng.random() < 0.2
                )
                text_rows(
                    rng, c, bx + 3, by + (bh - 7) // 2, bx + bw - 3, by + bh - 3, ink, None, "thin"
                )
    elif content == "portrait" and iy1 - iy0 >= 12:
        s = min(iy1 - iy0, 40)
        pp.bevel(c, ix0, iy0, ix0 + s, iy0 + s, dark, light, col.dark, sunken=True)
        face_spr = sprite_set(rng, col, 1, s - 4, s - 4)[0]
        pp.paste(c, face_spr, ix0 + (s - face_spr.shape[1]) // 2, iy0 + 2)
        text_rows(rng, c, ix0 + s + 4, iy0, ix1, iy1, ink)
    else:
        text_rows(rng, c, ix0, iy0, ix1, iy1, ink, col.dark if rng.random() < 0.3 else None)


def box_in(rng, h: int, w: int, min_h: int = 20, min_w: int = 40) -> tuple[int, int, int, int]:
    bw, bh = int(rng.integers(min(min_w, w), w + 1)), int(rng.integers(min(min_h, h), h + 1))
    x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    return x0, y0, x0 + bw, y0 + bh


def shapes(rng, c: np.ndarray, col: Colors, count: int) -> None:
    """Lines, rectangles, outlines and checker-dithered shadows."""
    h, w = c.shape
    for _ in range(count):
        kind = rng.choice(["line", "hline", "rect", "box", "shadow"])
        x0, y0, x1, y1 = box_in(rng, h // 3, w // 3, 4, 4)
        dx, dy = int(rng.integers(0, w - x1 + 1)), int(rng.integers(0, h - y1 + 1))
        x0, y0, x1, y1 = x0 + dx, y0 + dy, x1 + dx, y1 + dy
        if kind == "line":
            pp.line(
                c,
                *((x0, y0, x1 - 1, y1 - 1) if rng.random() < 0.5 else (x0, y1 - 1, x1 - 1, y0)),
                col.pick(),
            )
        elif kind == "hline":
            pp.rect(c, 0, y0, w, y0 + int(rng.integers(1, 3)), col.pick())
        elif kind == "rect":
            pp.rect(c, x0, y0, x1, y1, col.pick())
        elif kind == "box":
            pp.box(c, x0, y0, x1, y1, col.pick())
        else:
            view = c[y0:y1, x0:x1]
            view[(np.add.outer(np.arange(y0, y1), np.arange(x0, x1)) % 2) == 0] = col.dark
