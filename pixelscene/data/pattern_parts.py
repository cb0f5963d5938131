"""Drawing pieces for the procedural pattern images (`pixelscene.data.patterns`).

Everything draws palette indices into a uint8 canvas, or a view of one, with hard edges:
ordered dithering, seamless 8x8/16x16 tiles, symmetric sprites with 1-px outlines (CLEAR
marks their transparent pixels), a 5x7 bitmap font and variants of it, bevelled frames,
lines and rectangles. Shades are palette indices ordered dark to light.
"""

from __future__ import annotations

import numpy as np

from pixelscene.data.canvas import H, W

CLEAR = 255  # a transparent sprite or tile pixel

_B4 = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]])
_MATRICES = {
    "bayer2": (np.array([[0, 2], [3, 1]]) + 0.5) / 4,
    "bayer4": (_B4 + 0.5) / 16,
    "checker": np.array([[1, 2], [2, 1]]) / 3,
    "lines": np.array([[0.25], [0.75]]),
}
DITHERS = tuple(_MATRICES)
# Threshold planes one period larger than the 1x canvas, so any offset can be sliced out.
_PLANES = {
    k: np.tile(m, ((H + 4) // m.shape[0], (W + 4) // m.shape[1])).astype(np.float32)
    for k, m in _MATRICES.items()
}


def dither(t, shades, shape, kind="bayer4", sharp=1.0, y0=0, x0=0) -> np.ndarray:
    """Ordered-dither a field t in [0, 1] (broadcast to `shape`) over `shades`: sharp > 1
    keeps solid bands with dithered seams; (y0, x0) aligns the pattern with the canvas."""
    h, w = shape
    lut = np.asarray(shades, np.uint8)
    lut = np.append(lut, lut[-1])
    v = np.clip(np.asarray(t, np.float32), 0, 1) * (len(shades) - 1)
    base = np.floor(v)
    frac = np.clip((v - base - 0.5) * sharp + 0.5, 0, 1)
    plane = _PLANES[kind][y0 % 4 : y0 % 4 + h, x0 % 4 : x0 % 4 + w]
    return lut[base.astype(np.intp) + (frac > plane)]


# ----------------------------------------------------------------------------- tiles

TILE_KINDS = ("bricks", "grass", "water", "stone", "checker", "noise", "panel", "planks",
              "stripes", "dots", "flat")  # fmt: skip


def make_tile(rng, kind: str, t: int, shades) -> np.ndarray:
    """A seamless t x t tile (t = 8 or 16) of `shades` (at least 3, dark to light)."""
    shades = np.asarray(shades, np.uint8)
    d, m, li = shades[0], shades[len(shades) // 2], shades[-1]
    yy, xx = np.mgrid[:t, :t]
    a = np.full((t, t), m, np.uint8)
    if kind == "bricks":
        bh = t // 2 if rng.random() < 0.4 else max(t // 4, 4)
        bw = t if rng.random() < 0.5 else t // 2
        xs = (xx + (yy // bh % 2) * (bw // 2)) % bw
        a[(yy % bh == 0) | (xs == 0)] = li
        a[rng.random((t, t)) < 0.08] = shades[1]
        a[(yy % bh == bh - 1) | (xs == bw - 1)] = d
    elif kind == "grass":
        r = rng.random((t, t))
        blade = r < 0.13
        a[blade | np.roll(blade, -1, 0)] = d
        a[r > 0.94] = li
    elif kind == "water":
        per = t // int(rng.choice([1, 2]))
        wave = np.rint(rng.uniform(0.6, 2.2) * np.sin(2 * np.pi * int(rng.integers(1, 3)) * xx / t))
        wy = (yy + wave.astype(int)) % per
        a[wy == 0] = li
        a[wy == per // 2] = shades[1]
    elif kind == "stone":
        k = int(rng.integers(3, 7)) if t > 8 else int(rng.integers(2, 4))
        p = rng.random((k, 2)) * t
        dy, dx = np.abs(yy[..., None] - p[:, 0]), np.abs(xx[..., None] - p[:, 1])
        cell = (np.minimum(dy, t - dy) ** 2 + np.minimum(dx, t - dx) ** 2).argmin(-1)
        a = shades[1:][rng.integers(0, len(shades) - 1, k)][cell]
        a[cell != np.roll(cell, 1, 0)] = li
        a[(cell != np.roll(cell, -1, 0)) | (cell != np.roll(cell, -1, 1))] = d
    elif kind == "checker":
        c = int(rng.choice([1, 2, t // 4, t // 2]))
        i, j = rng.choice(len(shades), 2, replace=False)
        a = np.where((yy // c + xx // c) % 2 == 1, shades[i], shades[j]).astype(np.uint8)
    elif kind == "noise":
        b = int(rng.choice([1, 1, 2]))
        p = rng.dirichlet(np.full(len(shades), 0.8))
        a = shades[rng.choice(len(shades), (t // b, t // b), p=p)].repeat(b, 0).repeat(b, 1)
    elif kind == "panel":
        a[0], a[:, 0], a[-1], a[:, -1] = li, li, d, d
        if t > 8 and rng.random() < 0.5:
            a[4:-4, 4:-4] = shades[1]
            a[4, 4:-4], a[4:-4, 4] = d, d
        elif t > 8:
            a[[2, 2, -3, -3], [2, -3, 2, -3]] = d
    elif kind == "planks":
        pw = t // int(rng.choice([2, 4]))
        a[(yy % pw == pw // 2) & (rng.random((t, t)) < 0.4)] = shades[1]
        a[yy % pw == 0] = li
        a[yy % pw == pw - 1] = d
        a = a.T.copy() if rng.random() < 0.5 else a
    elif kind == "stripes":
        w = int(rng.choice([1, 2, t // 4]))
        a[((xx + yy * int(rng.choice([1, -1]))) // w) % 2 == 0] = d
    elif kind == "dots":
        s = t // int(rng.choice([2, 4]))
        on = (yy % s == s // 2) & ((xx + (yy // s % 2) * (s // 2)) % s == s // 2)
        a[np.roll(on, -1, 0)] = li
        a[on] = d
    else:  # flat
        a[rng.integers(0, t), rng.integers(0, t)] = li
    return a


def tile_image(tiles: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Lay tiles (n, t, t) out on a grid of tile numbers: (rows * t, cols * t)."""
    gh, gw = grid.shape
    t = tiles.shape[1]
    return tiles[grid].transpose(0, 2, 1, 3).reshape(gh * t, gw * t)


# ----------------------------------------------------------------------------- sprites


def dilate(m: np.ndarray) -> np.ndarray:
    """4-neighbour dilation of a boolean mask (same shape)."""
    p = np.pad(m, 1)
    return p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]


def _blob(rng, h: int, w: int) -> np.ndarray:
    hw = (w + 1) // 2
    y, x = np.mgrid[:h, :hw] + 0.5
    e = ((y - h / 2) / (h / 2)) ** 2 + ((x - hw) / hw) ** 2
    half = rng.random((h, hw)) < 1.3 - e * rng.uniform(0.8, 1.2)
    m = np.concatenate([half, half[:, ::-1][:, w % 2 :]], 1)
    p = np.pad(m, 1).astype(np.int8)
    s = sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3))
    return s >= 5  # a majority vote rounds off the noise


def _humanoid(rng, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[:h, :w] + 0.5
    ax = np.abs(x - w / 2)
    r = max(1.2, min(w * rng.uniform(0.16, 0.28), h * 0.16))
    head = (y - r) ** 2 + ax**2 <= r * r + 0.5
    top, hip = 2 * r - 0.5, h * rng.uniform(0.55, 0.7)
    bw = max(1.0, w * rng.uniform(0.16, 0.3))
    body = (y >= top) & (y < hip) & (ax <= bw)
    arm = max(1.0, w * 0.12)
    arms = (y >= top + 1) & (y < hip + 1) & (ax > bw) & (ax <= min(bw + arm, w / 2))
    legs = (y >= hip) & (ax <= bw) & (ax >= max(0.5, bw * rng.uniform(0.2, 0.5)))
    return head | body | arms | legs


def _item(rng, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[:h, :w] + 0.5
    ax, ay = np.abs(x - w / 2) / (w / 2), (y - h / 2) / (h / 2)
    kind = rng.choice(["gem", "orb", "potion", "heart", "tree", "mushroom", "ship", "sword"])
    if kind == "gem":
        return ax + np.abs(ay) <= 1
    if kind == "orb":
        return ax**2 + ay**2 <= 1.05
    if kind == "potion":
        return (ax**2 + ((y - h * 0.62) / (h * 0.38)) ** 2 <= 1.05) | ((ax <= 0.3) & (y > h * 0.08))
    if kind == "heart":
        lobes = (np.abs(ax - 0.5) / 0.5) ** 2 + ((y - h * 0.3) / (h * 0.3)) ** 2 <= 1.05
        return lobes | ((y >= h * 0.3) & (ax <= (h - y) / (h * 0.7)))
    if kind == "tree":
        tier = (y % (h * 0.3)) / (h * 0.3)
        return ((y < h * 0.85) & (ax <= 0.25 + 0.75 * tier)) | ((ax <= 0.2) & (y >= h * 0.8))
    if kind == "mushroom":
        return ((ay <= 0.1) & (ax**2 + ((y - h * 0.55) / (h * 0.55)) ** 2 <= 1)) | (
            (ax <= 0.35) & (ay > 0)
        )
    if kind == "ship":
        return ((ax <= y / h * 1.1) & (y < h * 0.8)) | ((y >= h * 0.8) & (np.abs(ax - 0.5) < 0.2))
    blade = np.abs((x - 0.5) - (w - 1) * (1 - y / h)) <= max(0.5, w / 14)  # sword
    guard = (np.abs((x - w * 0.2) + (y - h * 0.8)) <= 0.7) & (np.abs(x - w * 0.2) < w * 0.18)
    return blade | guard


SPRITE_KINDS = ("blob", "humanoid", "item")


def make_sprite(rng, h: int, w: int, shades, outline: int, eye: int, kind=None) -> np.ndarray:
    """An (h, w) sprite, 1 px of border for its outline: shades lit from the upper left,
    a dark rim, eyes on creatures; CLEAR outside."""
    kind = kind or rng.choice(SPRITE_KINDS, p=[0.45, 0.25, 0.3])
    ih, iw = max(h - 2, 3), max(w - 2, 3)
    m = {"blob": _blob, "humanoid": _humanoid, "item": _item}[kind](rng, ih, iw)
    m[ih // 2, iw // 2] = True
    m = np.pad(m, 1)
    y, x = np.mgrid[: ih + 2, : iw + 2]
    p = np.pad(m, 1)
    light = 1.0 - y / ih - (x / iw - 0.5) * rng.uniform(0, 0.8)
    light = light + 0.35 * ~p[:-2, 1:-1] - 0.4 * (~p[2:, 1:-1] | ~p[1:-1, 2:])
    lo, hi = light[m].min(), light[m].max()
    shades = np.asarray(shades, np.uint8)
    t = (light - lo) / max(hi - lo, 1e-6)
    if rng.random() < 0.25:  # dithered shading
        shaded = dither(t, shades, m.shape, rng.choice(DITHERS[:3]), float(rng.choice([1, 3])))
    else:
        shaded = shades[np.clip((t * len(shades)).astype(int), 0, len(shades) - 1)]
    out = np.where(m, shaded, np.uint8(CLEAR))
    if rng.random() < 0.92:
        out[dilate(m) & ~m] = outline
    if kind != "item" and iw >= 5:
        ey = 1 + int(ih * (0.12 if kind == "humanoid" else rng.uniform(0.2, 0.4)))
        ex = 1 + int(iw / 2 - max(1, iw * rng.uniform(0.1, 0.25)))
        for xx in (ex, iw + 1 - ex):
            if m[ey, xx]:
                out[ey, xx] = eye
    return out


def paste(canvas: np.ndarray, spr: np.ndarray, x: int, y: int) -> None:
    """Draw a sprite's opaque pixels with its top-left corner at (x, y), clipped."""
    h, w = spr.shape
    ch, cw = canvas.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, cw), min(y + h, ch)
    if x0 < x1 and y0 < y1:
        part = spr[y0 - y : y1 - y, x0 - x : x1 - x]
        np.copyto(canvas[y0:y1, x0:x1], part, where=part != CLEAR)


def paint(canvas: np.ndarray, mask: np.ndarray, x: int, y: int, color: int) -> None:
    """Set the pixels of a boolean mask, top-left at (x, y), to one colour, clipped."""
    paste(canvas, np.where(mask, np.uint8(color), np.uint8(CLEAR)), x, y)


# ----------------------------------------------------------------------------- glyphs

# The characters of the 5x7 font in glyph order (`pixelscene.output.sheet` labels with it).
CHARS = " ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.:!?-"
_HEX = (  # 5x7 glyphs, one byte per row (top to bottom), in the order of CHARS
    "00000000000000 0E11111F111111 1E11111E11111E 0E11101010110E 1C12111111121C 1F10101E10101F "
    "1F10101E101010 0E11101711110F 1111111F111111 0E04040404040E 0702020202120C 11121418141211 "
    "1010101010101F 111B1515111111 11111915131111 0E11111111110E 1E11111E101010 0E11111115120D "
    "1E11111E141211 0F10100E01011E 1F040404040404 1111111111110E 11111111110A04 1111111515150A "
    "11110A040A1111 1111110A040404 1F01020408101F 00000E010F110F 1010161911111E 00000E1010110E "
    "01010D1311110F 00000E111F100E 0609081C080808 000F11110F010E 10101619111111 04000C0404040E "
    "0200060202120C 10101214181412 0C04040404040E 00001A15151111 00001619111111 00000E1111110E "
    "00001E111E1010 00000D130F0101 00001619101010 00000E100E011E 08081C08080906 0000111111130D "
    "00001111110A04 0000111115150A 0000110A040A11 000011110F010E 00001F0204081F 0E11131519110E "
    "040C040404040E 0E11010204081F 1F02040201110E 02060A121F0202 1F101E0101110E 0608101E11110E "
    "1F010204080808 0E11110E11110E 0E11110F01020C 00000000000C0C 000C0C000C0C00 04040404000004 "
    "0E110102040004 0000001F000000"
).replace(" ", "")
_G5 = np.array([int(_HEX[i : i + 2], 16) for i in range(0, len(_HEX), 2)]).reshape(-1, 7)
FONT5 = ((_G5[:, :, None] >> np.arange(4, -1, -1)) & 1).astype(bool)  # (glyphs, 7, 5)
assert FONT5.shape[0] == len(CHARS)
LETTERS = np.arange(1, 53)
DIGITS = np.arange(53, 63)


def _runes(count: int = 40) -> np.ndarray:
    """Glyph-like shapes of 2-4 strokes between the nodes of a 3x3 lattice on 7x7."""
    rng = np.random.default_rng(1234)
    out = np.zeros((count, 7, 7), bool)
    for g in out:
        for _ in range(int(rng.integers(2, 5))):
            (y0, x0), (dy, dx) = rng.integers(0, 3, 2), rng.choice([-1, 0, 1], 2)
            y1, x1 = np.clip([y0 + dy, x0 + dx], 0, 2)
            n = np.arange(4)
            g[(y0 * 3 + (y1 - y0) * n).clip(0, 6), (x0 * 3 + (x1 - x0) * n).clip(0, 6)] = True
    return np.concatenate([np.zeros((1, 7, 7), bool), out])


def _fonts() -> dict[str, np.ndarray]:
    """Glyph sets padded to their character cells: (glyphs, cell height, cell width)."""
    bold = np.pad(FONT5, ((0, 0), (0, 0), (0, 1)))
    bold[:, :, 1:] |= FONT5
    fonts = {"thin": FONT5, "bold": bold, "tall": FONT5.repeat(2, 1), "runes": _runes()}
    return {k: np.pad(g, ((0, 0), (0, 1), (0, 1))) for k, g in fonts.items()}


FONTS = _fonts()


def random_text(rng, n: int, font: str = "thin") -> np.ndarray:
    """n glyph numbers: words of 1-9 letters or digits split by single spaces."""
    count = len(FONTS[font])
    pools = (LETTERS[:26], LETTERS, DIGITS, np.concatenate([LETTERS[:26], DIGITS]))
    pool = pools[rng.integers(len(pools))] if font != "runes" else np.arange(1, count)
    codes = pool[rng.integers(0, len(pool), n)]
    gaps = np.cumsum(rng.integers(2, 11, n))
    codes[gaps[gaps < n - 1]] = 0
    return codes


def text_mask(codes, font: str = "thin") -> np.ndarray:
    """A line of glyphs as one boolean mask (cell height, len(codes) * cell width)."""
    g = FONTS[font][np.asarray(codes) % len(FONTS[font])]
    n, ch, cw = g.shape
    return g.transpose(1, 0, 2).reshape(ch, n * cw)


# ----------------------------------------------------------------------------- shapes


def rect(c: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: int) -> None:
    """Fill [x0, x1) x [y0, y1), clipped to the canvas."""
    c[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = color


def box(c: np.ndarray, x0, y0, x1, y1, color: int) -> None:
    """A 1-px rectangle outline."""
    rect(c, x0, y0, x1, y0 + 1, color)
    rect(c, x0, y1 - 1, x1, y1, color)
    rect(c, x0, y0, x0 + 1, y1, color)
    rect(c, x1 - 1, y0, x1, y1, color)


def bevel(c: np.ndarray, x0, y0, x1, y1, face, light, dark, edge=None, sunken=False) -> None:
    """A raised (or sunken) bevelled panel, optionally inside a 1-px edge."""
    if edge is not None:
        box(c, x0, y0, x1, y1, edge)
        x0, y0, x1, y1 = x0 + 1, y0 + 1, x1 - 1, y1 - 1
    light, dark = (dark, light) if sunken else (light, dark)
    rect(c, x0, y0, x1, y1, dark)
    rect(c, x0, y0, x1 - 1, y1 - 1, light)
    rect(c, x0 + 1, y0 + 1, x1 - 1, y1 - 1, face)


def line(c: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: int) -> None:
    """A 1-px line without anti-aliasing, clipped."""
    n = max(abs(x1 - x0), abs(y1 - y0)) + 1
    xs = np.rint(np.linspace(x0, x1, n)).astype(int)
    ys = np.rint(np.linspace(y0, y1, n)).astype(int)
    ok = (xs >= 0) & (xs < c.shape[1]) & (ys >= 0) & (ys < c.shape[0])
    c[ys[ok], xs[ok]] = color
