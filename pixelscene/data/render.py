"""Vectorised drawing of one VGA-style 320x200 scene into a small per-scene palette.

The canvas holds palette indices; every colour goes through `Palette.add`, which snaps it to
the 6-bit DAC, so the final image uses 16-48 DAC colours with hard edges and no blending.
"""

from __future__ import annotations

import numpy as np

from pixelscene.data.vga import DAC_LEVELS

H, W = 200, 320
YY = np.arange(H)[:, None]
XX = np.arange(W)[None, :]
_B4 = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]])
BAYER = ((np.tile(_B4, (H // 4, W // 4)) + 0.5) / 16.0).astype(np.float32)  # (H, W) in (0, 1)
MIN_COLORS, MAX_COLORS = 16, 48
_LEVELS = [int(v) for v in DAC_LEVELS]

SKY_KEYS = {
    "day": [(40, 90, 200), (90, 150, 235), (175, 215, 250)],
    "sunset": [(50, 28, 95), (165, 60, 115), (250, 125, 50), (255, 205, 95)],
    "night": [(3, 5, 22), (12, 20, 60), (32, 42, 100)],
    "dawn": [(105, 135, 200), (230, 160, 195), (255, 225, 185)],
}
# Terrain light: rgb * mul + add, per time of day.
LIGHT = {
    "day": ((1.0, 1.0, 1.0), (0, 0, 0)),
    "sunset": ((0.8, 0.55, 0.55), (40, 5, 25)),
    "night": ((0.3, 0.32, 0.46), (4, 8, 30)),
    "dawn": ((0.85, 0.75, 0.82), (30, 12, 28)),
}
TERRAIN_COLORS = {  # (far layer, near layer, foreground detail)
    "mountains": ((110, 100, 130), (95, 85, 75), (70, 110, 50)),
    "hills": ((70, 120, 70), (60, 135, 45), (45, 105, 35)),
    "plains": ((100, 150, 70), (115, 165, 60), (190, 170, 70)),
    "desert": ((200, 135, 85), (220, 175, 105), (190, 145, 85)),
    "coast": ((95, 110, 95), (110, 100, 80), (222, 202, 140)),
    "lake": ((80, 110, 90), (70, 125, 50), (55, 100, 40)),
}
WEATHER_SKY = {  # blend the sky towards a colour (scaled by the time's light)
    "clear": (None, 0.0),
    "clouds": ((150, 150, 160), 0.25),
    "rain": ((85, 90, 100), 0.55),
    "snow": ((190, 195, 205), 0.5),
    "fog": ((200, 200, 200), 0.6),
}


class Palette:
    """Per-scene palette: colours are snapped to the DAC and deduplicated."""

    def __init__(self) -> None:
        self.colors: list[tuple[int, int, int]] = []
        self._index: dict[tuple[int, int, int], int] = {}

    def add(self, rgb) -> int:
        c = tuple(_LEVELS[min(max(round(float(v) * 63 / 255), 0), 63)] for v in rgb)
        if c not in self._index:
            self._index[c] = len(self.colors)
            self.colors.append(c)
        return self._index[c]

    def array(self) -> np.ndarray:
        return np.array(self.colors, dtype=np.uint8)


def mix(a, b, t: float) -> np.ndarray:
    return np.asarray(a, dtype=np.float64) * (1 - t) + np.asarray(b, dtype=np.float64) * t


def lit(rgb, time: str) -> np.ndarray:
    mul, add = LIGHT[time]
    return np.asarray(rgb, dtype=np.float64) * mul + add


def stamp(canvas: np.ndarray, roles: np.ndarray, lut: dict[int, int], x0: int, y0: int) -> None:
    """Draw a sprite of role ids (0 = transparent) with its top-left corner at (x0, y0)."""
    h, w = roles.shape
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    part = roles[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    table = np.zeros(int(roles.max()) + 1, dtype=np.uint8)
    for role, idx in lut.items():
        if role < len(table):
            table[role] = idx
    view = canvas[cy0:cy1, cx0:cx1]
    view[...] = np.where(part > 0, table[part], view)


def disc(r: float) -> np.ndarray:
    n = int(np.ceil(r)) * 2 + 1
    c = n // 2
    y, x = np.ogrid[:n, :n]
    return (x - c) ** 2 + (y - c) ** 2 <= r * r + 0.3 * r


# ----------------------------------------------------------------------------- profiles


def profile(rng, kind: str, base: float, amp: float, step: int = 2) -> np.ndarray:
    """A column height profile (row of the surface per x), stepped for a pixel-art edge."""
    x = np.arange(W, dtype=np.float64)
    y = np.zeros(W)
    if kind == "jagged":
        for octave in range(3):
            period = rng.uniform(90, 160) / (2.1**octave)
            ph = rng.uniform(0, period)
            tri = np.abs(((x + ph) / period) % 1.0 - 0.5) * 2  # 0 at peaks, 1 in valleys
            y += amp * tri / (1.6**octave)
    elif kind == "dunes":
        for octave in range(2):
            period = rng.uniform(120, 220) / (2.0**octave)
            ph = rng.uniform(0, 2 * np.pi)
            s = np.sin(x * 2 * np.pi / period + ph)
            y += amp * (1 - (s + 0.35 * np.sin(2 * (x * 2 * np.pi / period + ph)))) / (2**octave)
    else:  # smooth
        for octave in range(3):
            period = rng.uniform(140, 260) / (2.2**octave)
            ph = rng.uniform(0, 2 * np.pi)
            y += amp * (1 - np.sin(x * 2 * np.pi / period + ph)) / (2.5**octave)
    y -= y.min()
    prof = base + y + rng.integers(0, 2, W // step + 1).repeat(step)[:W]
    return np.repeat(prof[::step], step)[:W].astype(np.int64)


# ----------------------------------------------------------------------------- sprites
# Roles: 1 main, 2 shade, 3 dark, 4 window/lamp, 5 roof/accent, 6 snow, 7 highlight.


def _crenellate(a: np.ndarray, x0: int, x1: int, top: int, role: int, size: int = 2) -> None:
    cols = np.arange(x0, x1)
    merlons = cols[((cols - x0) % (2 * size)) < size]
    a[max(top - size - 1, 0) : top, merlons] = role


def sprite_castle(rng) -> np.ndarray:
    w = int(rng.integers(60, 86))
    wall_h = int(rng.integers(24, 32))
    tw = int(rng.integers(12, 16))
    th = wall_h + int(rng.integers(14, 22))
    kh = wall_h + int(rng.integers(6, 12))
    pointed = rng.random() < 0.4
    h = max(th + (tw + 4 if pointed else 4), kh + 14)
    a = np.zeros((h, w), np.uint8)
    a[h - wall_h :, 2 : w - 2] = 1
    _crenellate(a, 2, w - 2, h - wall_h, 1)
    kw = w // 3
    kx = (w - kw) // 2
    a[h - kh :, kx : kx + kw] = 1
    _crenellate(a, kx, kx + kw, h - kh, 1)
    a[h - kh - 12 : h - kh - 3, kx + kw // 2] = 3  # flag pole
    a[h - kh - 12 : h - kh - 8, kx + kw // 2 + 1 : kx + kw // 2 + 6] = 5
    for tx in (0, w - tw):
        a[h - th :, tx : tx + tw] = 1
        a[h - th :, tx + tw * 2 // 3 : tx + tw] = 2
        if pointed:
            rr = tw // 2 + 4
            for r in range(rr):
                half = int(r * (tw / 2 + 1) / rr)
                a[h - th - rr + r, max(tx + tw // 2 - half, 0) : tx + tw // 2 + half + 1] = 5
        else:
            _crenellate(a, tx, tx + tw, h - th, 1)
        a[h - th + 6 : h - th + 10, tx + tw // 2 - 1 : tx + tw // 2 + 1] = 4
        a[h - th + 16 : h - th + 20, tx + tw // 2 - 1 : tx + tw // 2 + 1] = 4
    mortar = (np.arange(h)[:, None] % 5 == 0) & (np.arange(w)[None, :] % 7 == 3) & (a == 1)
    a[mortar] = 2
    a[h - kh + 5 : h - kh + 9, kx + 3 : kx + 5] = 4
    a[h - kh + 5 : h - kh + 9, kx + kw - 5 : kx + kw - 3] = 4
    dw = max(kw // 3, 6)
    dx = (w - dw) // 2
    a[h - 10 :, dx : dx + dw] = 3
    a[h - 11, dx + 1 : dx + dw - 1] = 3
    return a


def sprite_cottage(rng) -> np.ndarray:
    ww = int(rng.integers(28, 40))
    wh = int(rng.integers(14, 19))
    over = 3
    rh = ww // 2 + 2
    w = ww + 2 * over
    h = wh + rh + 2
    a = np.zeros((h, w), np.uint8)
    a[h - wh :, over : over + ww] = 1
    a[h - wh :, over + ww * 3 // 4 : over + ww] = 2
    rows = np.arange(rh)[:, None]
    cols = np.arange(w)[None, :]
    roof = np.abs(cols - (w - 1) / 2) <= (rows + 1) * (w / 2) / rh
    roof_role = np.where(rows % 3 == 2, 3, 5)
    top = h - wh - rh
    a[top : h - wh] = np.where(roof, roof_role, a[top : h - wh])
    cx = over + ww // 4
    a[top + 2 : top + rh // 2 + 1, w - over - 8 : w - over - 5] = 3  # chimney
    a[h - 9 :, cx : cx + 5] = 3
    a[h - wh + 4 : h - wh + 8, over + ww // 2 : over + ww // 2 + 5] = 4
    a[h - wh + 4 : h - wh + 8, over + ww // 2 + 2] = 3
    return a


def sprite_tower(rng) -> np.ndarray:
    tw = int(rng.integers(13, 19))
    th = int(rng.integers(52, 76))
    pointed = rng.random() < 0.5
    w = tw + 4
    h = th + (tw + 2 if pointed else 6)
    a = np.zeros((h, w), np.uint8)
    a[h - th :, 2 : 2 + tw] = 1
    a[h - th :, 2 + tw * 2 // 3 : 2 + tw] = 2
    if pointed:
        rh = tw // 2 + 6
        rows = np.arange(rh)[:, None]
        cols = np.arange(w)[None, :]
        a[h - th - rh : h - th] = np.where(
            np.abs(cols - (w - 1) / 2) <= (rows + 1) * (w / 2) / rh, 5, 0
        )
    else:
        a[h - th : h - th + 3, :] = 1
        _crenellate(a, 0, w, h - th, 1)
    for y in range(h - th + 8, h - 14, 12):
        a[y : y + 4, w // 2 - 1 : w // 2 + 1] = 4
    a[h - 8 :, w // 2 - 2 : w // 2 + 2] = 3
    return a


def sprite_ruins(rng) -> np.ndarray:
    w = int(rng.integers(56, 84))
    h = int(rng.integers(34, 48))
    a = np.zeros((h, w), np.uint8)
    cols = np.arange(w)
    tops = h - (h * (0.35 + 0.65 * rng.random(w // 3 + 1))).astype(np.int64).repeat(3)[:w]
    gaps = rng.random(w // 6 + 1).repeat(6)[:w] < 0.25
    tops[gaps] = h - 4
    wall = np.arange(h)[:, None] >= tops[None, :]
    a[wall] = 1
    a[wall & ((cols[None, :] // 3) % 4 == 3)] = 2
    for ax in rng.integers(6, w - 12, 2):
        r = np.arange(h)[:, None]
        hole = ((cols[None, :] - ax - 4) ** 2 / 16 + (r - (h - 14)) ** 2 / 49 <= 1) | (
            (np.abs(cols[None, :] - ax - 4) <= 3) & (r >= h - 14) & (r < h - 2)
        )
        a[hole & (a > 0)] = 3
    edge = wall & ~np.roll(wall, 1, axis=0)
    a[edge & (rng.random((h, w)) < 0.6)] = 5  # moss
    for bx in rng.integers(0, w - 4, 4):
        a[h - 3 :, bx : bx + 4] = 2
    return a


def sprite_lighthouse(rng) -> np.ndarray:
    th = int(rng.integers(56, 78))
    bw = int(rng.integers(15, 19))
    top_w = bw - 6
    w = bw + 4
    h = th + 16
    a = np.zeros((h, w), np.uint8)
    r = np.arange(th)
    half = (top_w + (bw - top_w) * r / (th - 1)) / 2
    cols = np.arange(w)[None, :]
    body = np.abs(cols - (w - 1) / 2) <= half[:, None]
    stripe = ((r // 9) % 2 == 1)[:, None]
    a[h - th :] = np.where(body, np.where(stripe, 5, 1), 0)
    a[h - th :][body & (cols > (w - 1) / 2 + half[:, None] / 3)] = 2
    c = w // 2
    a[h - th - 2 : h - th, c - top_w // 2 - 2 : c + top_w // 2 + 3] = 3  # gallery
    a[h - th - 9 : h - th - 2, c - 3 : c + 4] = 4  # lantern room
    a[h - th - 9 : h - th - 2, c] = 3
    for i in range(5):
        a[h - th - 14 + i, c - i + 1 : c + i] = 3  # cap
    a[h - 8 :, c - 2 : c + 2] = 3
    return a


def sprite_pine(rng, scale: float = 1.0) -> np.ndarray:
    hh = max(int(rng.integers(18, 32) * scale), 7)
    tiers = 3
    w = hh * 2 // 3 | 1
    trunk = max(int(3 * scale), 1)
    a = np.zeros((hh + trunk, w), np.uint8)
    r = np.arange(hh)[:, None]
    tier = np.minimum(r * tiers // hh, tiers - 1)
    within = r - tier * hh // tiers
    halfw = 0.5 + within * 0.75 + tier * 1.0
    halfw = np.minimum(halfw, (r + 1) * 0.5 + 0.5)
    cols = np.arange(w)[None, :] - w // 2
    canopy = np.abs(cols) <= halfw
    a[:hh][canopy] = 1
    a[:hh][canopy & (cols > 0)] = 2
    a[:hh][canopy & (within < 2)] = 6
    a[hh:, w // 2 - (trunk > 1) : w // 2 + 1] = 3
    return a


def sprite_broadleaf(rng, scale: float = 1.0) -> np.ndarray:
    r = max(rng.uniform(6.5, 10.0) * scale, 3.0)
    n = int(np.ceil(r)) * 2 + 5
    trunk = max(int(rng.integers(5, 9) * scale), 2)
    a = np.zeros((n + trunk, n), np.uint8)
    y, x = np.ogrid[:n, :n]
    c = n / 2 - 0.5
    blob = (x - c) ** 2 + (y - c) ** 2 <= r * r
    for dx, dy, rr in ((-r * 0.55, r * 0.3, r * 0.7), (r * 0.55, r * 0.35, r * 0.65)):
        blob |= (x - c - dx) ** 2 + (y - c - dy) ** 2 <= rr * rr
    a[:n][blob] = 1
    shade = blob & ((x - c) + (y - c) > r * 0.3)
    a[:n][shade & (BAYER[:n, :n] < 0.75)] = 2
    a[:n][blob & ((x - c) + (y - c) < -r * 0.9)] = 7
    a[n - 2 :, int(c) - 1 : int(c) + 2] = 3
    a[n:, int(c) - 1 : int(c) + 2] = 3
    return a


def sprite_palm(rng, scale: float = 1.0) -> np.ndarray:
    th = max(int(rng.integers(20, 30) * scale), 8)
    fl = max(int(rng.integers(10, 14) * scale), 5)
    w = 2 * fl + 8
    h = th + 6
    a = np.zeros((h, w), np.uint8)
    bend = rng.uniform(-5, 5) * scale
    t = np.linspace(0, 1, th)
    xs = (w // 2 + bend * (1 - t) ** 2).astype(np.int64)
    ys = (h - 1 - t * (th - 1)).astype(np.int64)
    a[ys, xs] = 3
    a[ys, np.minimum(xs + 1, w - 1)] = np.where(ys % 3 == 0, 2, 3)
    tx, ty = xs[-1], ys[-1]
    s = np.linspace(0, 1, fl * 2)
    for ang in (-1.0, -0.55, -0.15, 0.2, 0.6, 1.0):
        dx = np.sign(ang) * (0.35 + abs(ang)) * fl * s / 1.35
        dy = -2.5 * s + (5 + 4 * abs(ang)) * s**2 * scale
        fx = np.clip((tx + dx).astype(np.int64), 0, w - 1)
        fy = np.clip((ty + dy).astype(np.int64), 0, h - 1)
        a[fy, fx] = 1
        a[np.clip(fy + 1, 0, h - 1), fx] = 2
    a[ty : ty + 2, tx - 1 : tx + 2] = 5
    return a


def sprite_cactus(rng, scale: float = 1.0) -> np.ndarray:
    th = max(int(rng.integers(16, 28) * scale), 6)
    tw = 5 if scale >= 0.8 else 3
    w = tw * 4
    a = np.zeros((th, w), np.uint8)
    c = w // 2 - tw // 2
    a[1:, c : c + tw] = 1
    a[0, c + 1 : c + tw - 1] = 1
    for side in (-1, 1):
        if rng.random() < 0.8:
            ay = int(th * rng.uniform(0.35, 0.6))
            ah = int(th * rng.uniform(0.25, 0.4))
            ax = c - tw + 1 if side < 0 else c + tw
            a[ay : ay + 3, min(ax, c) : max(ax + tw - 1, c + tw)] = 1
            arm_x = ax if side < 0 else ax + tw - 1 - (tw - 2)
            a[max(ay - ah, 1) : ay + 3, arm_x : arm_x + tw - 2] = 1
    ribs = (np.arange(w)[None, :] % 2 == 1) & (a == 1)
    a[ribs & (np.arange(th)[:, None] % 1 == 0) & (np.arange(w)[None, :] > c + tw // 2)] = 2
    return a


LANDMARK_SPRITES = {
    "castle": sprite_castle,
    "cottage": sprite_cottage,
    "tower": sprite_tower,
    "ruins": sprite_ruins,
    "lighthouse": sprite_lighthouse,
}
VEG_SPRITES = {
    "pine": sprite_pine,
    "broadleaf": sprite_broadleaf,
    "palms": sprite_palm,
    "cacti": sprite_cactus,
}


# ----------------------------------------------------------------------------- the scene


def _gradient(keys, n: int) -> list[np.ndarray]:
    keys = np.asarray(keys, dtype=np.float64)
    pos = np.linspace(0, 1, len(keys))
    t = np.linspace(0, 1, n)
    return [np.array([np.interp(ti, pos, keys[:, c]) for c in range(3)]) for ti in t]


def _dithered_ramp(t: np.ndarray, idxs: list[int], y0: int = 0) -> np.ndarray:
    """Ordered-dither a per-row field t (rows, 1) in [0, 1] over a colour ramp, starting at
    canvas row y0: solid bands with Bayer-dithered transitions."""
    v = np.clip(t, 0, 1) * (len(idxs) - 1)
    base = np.floor(v)
    frac = np.clip((v - base - 0.5) * 3.0 + 0.5, 0, 1).astype(np.float32)
    k = base.astype(np.int64) + (frac > BAYER[y0 : y0 + t.shape[0]])
    return np.asarray(idxs + idxs[-1:], dtype=np.uint8)[k]


def _layers(rng, terrain: str, hz: int) -> list[tuple[np.ndarray, bool]]:
    """Far-to-near (profile, jagged) pairs for the silhouettes behind the foreground."""
    n = {"mountains": 3, "hills": 2, "plains": 1, "desert": 2, "coast": 1, "lake": 1}[terrain]
    n = max(1, n - int(rng.random() < 0.3)) if terrain in ("mountains", "hills") else n
    out = []
    for i in range(n):
        f = 1 - i / max(n, 1)
        if terrain == "mountains":
            out.append((profile(rng, "jagged", hz - 28 - 45 * f, 30 + 30 * f), True))
        elif terrain == "hills":
            out.append((profile(rng, "smooth", hz - 15 - 25 * f, 18 + 14 * f), False))
        elif terrain == "plains":
            out.append((profile(rng, "smooth", hz - 5, 4), False))
        elif terrain == "desert":
            kind = "dunes" if i or rng.random() < 0.5 else "mesa"
            if kind == "mesa":
                p = profile(rng, "smooth", hz - 30, 40)
                out.append((np.maximum(p, p.min() + 14), False))
            else:
                out.append((profile(rng, "dunes", hz - 8 - 12 * f, 10 + 6 * f), False))
        elif terrain == "coast":
            p = profile(rng, "smooth", hz - 14, 10)
            side = rng.random() < 0.5
            cut = int(rng.integers(60, 140))
            p[(XX[0] > cut) if side else (XX[0] < W - cut)] = H
            out.append((p, False))
        else:  # lake: hills or mountains behind the water
            jag = rng.random() < 0.5
            p = profile(rng, "jagged" if jag else "smooth", hz - 45, 35)
            out.append((np.minimum(p, hz - 3 - (XX[0] // 6) % 2), jag))
    return out


def render_scene(attrs: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Draw one scene. Returns (rgb uint8 (200, 320, 3), extra facts about the drawing:
    "horizon", "colors", and "sprites", an (H, W) bool mask of the pixels the landmark and
    vegetation sprites drew before the weather went on top)."""
    time, weather, terrain = attrs["time"], attrs["weather"], attrs["terrain"]
    landmark, veg, cel = attrs["landmark"], attrs["vegetation"], set(attrs["celestial"])
    pal = Palette()
    snow, fog = weather == "snow", weather == "fog"
    hz = int(rng.integers(112, 130))
    jit = rng.uniform(0.92, 1.08, 3)

    # Sky: a dithered gradient from the zenith to the horizon.
    keys = [np.asarray(k) * jit for k in SKY_KEYS[time]]
    tint, amount = WEATHER_SKY[weather]
    if tint is not None:
        keys = [mix(k, lit(tint, time) if time != "day" else tint, amount) for k in keys]
    sky_cols = _gradient(keys, int(rng.integers(5, 8)))
    sky_idx = [pal.add(c) for c in sky_cols]
    horizon_rgb = sky_cols[-1]
    canvas = _dithered_ramp(np.clip(YY / hz, 0, 1), sky_idx)

    # Stars, moon, sun.
    if "stars" in cel:
        n = int(rng.integers(50, 130)) if weather == "clear" else int(rng.integers(20, 40))
        sy, sx = rng.integers(0, hz - 8, n), rng.integers(0, W, n)
        canvas[sy, sx] = pal.add((255, 255, 255))
        b = rng.random(n) < 0.35
        canvas[sy[b], sx[b]] = pal.add((170, 190, 255))
        for y, x in zip(sy[:6], sx[:6]):
            canvas[max(y - 1, 0) : y + 2, x] = pal.add((255, 255, 210))
            canvas[y, max(x - 1, 0) : x + 2] = pal.add((255, 255, 210))
    body_x = int(rng.integers(30, W - 30))
    body_rgb = None
    if "moon" in cel:
        r = rng.uniform(5, 9)
        m = disc(r)
        y0 = int(rng.integers(12, 50)) if time == "night" else int(rng.integers(10, 30))
        roles = m.astype(np.uint8)
        if rng.random() < 0.5:  # crescent
            s = int(round(r * 0.7))
            cut = np.zeros_like(m)
            cut[: m.shape[0] - 1, s:] = m[1:, : m.shape[1] - s]
            roles[cut] = 0
        else:
            roles[m & (BAYER[: m.shape[0], : m.shape[1]] < 0.12)] = 2
        body_rgb = (240, 240, 215) if time == "night" else (235, 235, 245)
        lut = {1: pal.add(body_rgb), 2: pal.add((190, 190, 175))}
        stamp(canvas, roles, lut, body_x - m.shape[1] // 2, y0)
    if "sun" in cel:
        if time == "day":
            r, y0, col = rng.uniform(8, 12), int(rng.integers(12, 45)), (255, 245, 170)
        elif time == "sunset":
            r, col = rng.uniform(14, 20), (255, 140, 60)
            y0 = hz - int(r * rng.uniform(1.2, 2.0))
        else:
            r, col = rng.uniform(10, 15), (255, 228, 165)
            y0 = hz - int(r * rng.uniform(1.4, 2.4))
        m = disc(r)
        roles = m.astype(np.uint8)
        if time == "sunset":  # the retro striped setting sun
            rows = np.broadcast_to(np.arange(m.shape[0])[:, None], m.shape)
            roles[(rows > m.shape[0] // 2) & ((rows - m.shape[0] // 2) % 4 == 1)] = 0
            roles[m & (rows < m.shape[0] // 3)] = 2
        body_rgb = col
        lut = {1: pal.add(col), 2: pal.add((255, 200, 90))}
        stamp(canvas, roles, lut, body_x - m.shape[1] // 2, y0)

    # Clouds and overcast.
    cloud_rgb = {
        "day": ((245, 245, 250), (195, 200, 220)),
        "sunset": ((250, 165, 145), (175, 95, 120)),
        "night": ((62, 68, 95), (40, 45, 72)),
        "dawn": ((255, 228, 230), (205, 175, 200)),
    }[time]
    if weather in ("rain", "snow"):
        k = 0.55 if weather == "rain" else 0.85
        cloud_rgb = tuple(mix(np.asarray(c) * k, (128, 128, 135), 0.4) for c in cloud_rgb)
    c_main, c_shade = pal.add(cloud_rgb[0]), pal.add(cloud_rgb[1])
    if weather in ("rain", "snow", "fog"):
        base = profile(rng, "smooth", int(rng.integers(14, 30)), 12)
        over = YY < (base.max() + 2 - (base - base.min()))[None, :]
        canvas[over] = c_shade
        canvas[YY < (base.max() - 3 - (base - base.min()))[None, :]] = c_main
    n_clouds = {"clear": 0, "clouds": int(rng.integers(5, 9)), "fog": 0}.get(
        weather, int(rng.integers(2, 5))
    )
    for _ in range(n_clouds):
        cw = int(rng.integers(30, 80))
        ch = cw // 3 + 4
        roles = np.zeros((ch, cw), np.uint8)
        y, x = np.ogrid[:ch, :cw]
        for cx in np.linspace(ch / 2, cw - ch / 2, int(rng.integers(3, 6))):
            rr = rng.uniform(0.45, 0.95) * ch
            roles[((x - cx) ** 2 + (y - ch) ** 2 <= rr * rr)] = 1
        roles[(roles == 1) & (y >= ch - max(ch // 4, 2))] = 2
        roles[-1] = 0
        stamp(canvas, roles, {1: c_main, 2: c_shade}, int(rng.integers(-20, W - 10)),
              int(rng.integers(0, max(hz - 40, 5))))  # fmt: skip

    # Terrain: far silhouettes, water, foreground.
    far, near, detail = TERRAIN_COLORS[terrain]
    layers = _layers(rng, terrain, hz)
    haze = 0.5 + (0.3 if fog else 0.0)
    snow_rgb = lit((235, 240, 250), time)
    for i, (prof, jag) in enumerate(layers):
        f = 1 - i / len(layers)
        col = mix(lit(mix(near, far, f), time), horizon_rgb, haze * f)
        main, shade = pal.add(col), pal.add(col * 0.82)
        mask = YY >= prof[None, :]
        canvas[mask] = main
        if jag:
            smooth = np.convolve(prof.astype(np.float64), np.ones(9) / 9, mode="same")
            faces = np.gradient(smooth) > 0
            canvas[mask & faces[None, :] & (YY < prof[None, :] + 40)] = shade
        else:
            canvas[mask & (YY > prof[None, :] + 4) & (BAYER < 0.5)] = shade
        if snow or (jag and terrain == "mountains" and i == 0 and time != "night" and False):
            cap = pal.add(mix(snow_rgb, horizon_rgb, haze * f * 0.5))
            canvas[mask & (YY < prof[None, :] + (7 if jag else 2))] = cap
    water_rows = None
    if terrain in ("coast", "lake"):
        wb = H if terrain == "coast" else hz + int(rng.integers(28, 44))
        sea = (30, 85, 160) if terrain == "coast" else (45, 105, 140)
        wcols = [mix(lit(sea, time), horizon_rgb, a) for a in (0.55, 0.3, 0.1)]
        widx = [pal.add(c) for c in wcols]
        tw = np.clip((YY[hz:wb] - hz) / max(wb - hz, 1), 0, 1)
        rows = (YY >= hz) & (YY < wb)
        canvas[hz:wb] = _dithered_ramp(tw, widx, hz)
        if terrain == "lake" and layers:
            prof = layers[-1][0]
            refl = rows & (YY - hz < (hz - prof[None, :]) * 0.6) & (YY % 3 != 0)
            canvas[refl] = pal.add(mix(wcols[1], (0, 0, 0), 0.35))
        else:
            canvas[hz, :] = pal.add(mix(wcols[0], (255, 255, 255), 0.25))
        n = int(rng.integers(40, 90))
        wy = rng.integers(hz + 2, wb, n)
        wx = rng.integers(0, W - 8, n)
        ln = rng.integers(2, 7, n)
        xs = (wx[:, None] + np.arange(8)[None, :]).clip(0, W - 1)
        ok = np.arange(8)[None, :] < ln[:, None]
        canvas[np.broadcast_to(wy[:, None], xs.shape)[ok], xs[ok]] = pal.add(
            mix(wcols[2], (255, 255, 255), 0.35)
        )
        if body_rgb is not None:
            ry = np.arange(hz + 2, wb, 2)
            half = (2 + (ry - hz) // 6 + rng.integers(0, 3, ry.size)).clip(0, 10)
            xs = np.broadcast_to(body_x + np.arange(-10, 11)[None, :], (ry.size, 21))
            ok = np.abs(np.arange(-10, 11))[None, :] <= half[:, None]
            canvas[np.broadcast_to(ry[:, None], xs.shape)[ok], xs[ok].clip(0, W - 1)] = pal.add(
                mix(body_rgb, wcols[1], 0.3)
            )
        water_rows = (hz, wb)

    # Foreground.
    fg_base = int(rng.integers(160, 172))
    if terrain == "coast":
        land_left = rng.random() < 0.5
        land_w = int(rng.integers(120, 190))
        xx = XX[0] if land_left else W - 1 - XX[0]
        cliff = profile(rng, "smooth", hz + int(rng.integers(12, 30)), 8)
        fg = np.where(xx < land_w, cliff, H - 6 + (xx // 40) % 2)
        slope = (xx >= land_w) & (xx < land_w + 24)
        fg = np.where(slope, cliff + (xx - land_w) * (H - 6 - cliff) // 24, fg)
        usable = xx < land_w - 6
    elif terrain == "lake":
        fg = profile(rng, "smooth", water_rows[1], 6)
        usable = np.ones(W, bool)
    else:
        kind = {"desert": "dunes", "plains": "smooth"}.get(terrain, "smooth")
        fg = profile(rng, kind, fg_base, {"plains": 3, "desert": 10}.get(terrain, 10))
        usable = np.ones(W, bool)
    fg_rgb = lit(near if terrain != "coast" else (110, 100, 80), time)
    if snow:
        fg_rgb = mix(snow_rgb, fg_rgb, 0.15)
    fmask = YY >= fg[None, :]
    canvas[fmask] = pal.add(fg_rgb)
    depth = YY - fg[None, :]
    canvas[fmask & (BAYER < np.clip(depth / 40.0, 0, 0.6))] = pal.add(fg_rgb * 0.8)
    top_rgb = lit(detail, time) if not snow else snow_rgb * 1.02
    if terrain == "coast":
        top_rgb = lit((70, 130, 50), time) if not snow else snow_rgb
        canvas[fmask & (YY >= H - 8) & ~usable[None, :]] = pal.add(lit(detail, time))
    if terrain == "plains" and not snow:
        canvas[fmask & ((depth // 5) % 2 == 1) & (BAYER < 0.75)] = pal.add(top_rgb)
    else:
        canvas[fmask & (depth < 2 + (BAYER < 0.5))] = pal.add(top_rgb)
    n = 60
    ty, tx = rng.integers(0, H, n), rng.integers(0, W, n)
    keep = ty > fg[tx] + 3
    canvas[ty[keep], tx[keep]] = pal.add(mix(top_rgb, fg_rgb, 0.5) * 1.1)

    # Landmark.
    before_sprites = canvas.copy()
    span = (-100, -100)
    if landmark != "none":
        spr = LANDMARK_SPRITES[landmark](rng)
        sh, sw = spr.shape
        cand = np.flatnonzero(usable[: W - sw] & usable[sw - 1 :][: W - sw])
        cand = cand[(cand > 8) & (cand < W - sw - 8)]
        x0 = int(rng.choice(cand)) if cand.size else (W - sw) // 2
        base = int(fg[x0 : x0 + sw].max()) + 2
        lit_windows = time in ("night", "sunset")
        stone = {
            "castle": (150, 150, 160), "tower": (145, 135, 120), "ruins": (150, 140, 120),
            "cottage": (215, 200, 160), "lighthouse": (235, 235, 228),
        }[landmark]  # fmt: skip
        accent = {
            "castle": (160, 45, 45), "tower": (80, 85, 130), "ruins": (80, 120, 55),
            "cottage": (165, 65, 40), "lighthouse": (200, 35, 35),
        }[landmark]  # fmt: skip
        lamp = (255, 225, 90) if lit_windows else (45, 45, 65)
        if landmark == "lighthouse":
            lamp = (255, 245, 130) if time == "night" else (175, 205, 215)
        lut = {
            1: pal.add(lit(stone, time)),
            2: pal.add(lit(stone, time) * 0.75),
            3: pal.add(lit((45, 38, 45), time)),
            4: pal.add(lamp),
            5: pal.add(lit(accent, time) if not (snow and landmark == "cottage") else snow_rgb),
        }
        y0 = base - sh + 1
        if landmark == "lighthouse" and time == "night":
            ly, lx = y0 + sh - (sh - 16) - 6, x0 + sw // 2
            dx = np.abs(XX - lx)
            beam = (np.abs(YY - ly) <= dx * 0.12 + 1) & (dx > 3) & (dx < 130) & (BAYER < 0.5)
            canvas[beam] = pal.add(mix(lamp, horizon_rgb, 0.45))
        stamp(canvas, spr, lut, x0, y0)
        span = (x0 - 6, x0 + sw + 6)

    # Vegetation: small ones on the last silhouette, big ones in the foreground.
    if veg != "none":
        sprite = VEG_SPRITES[veg]
        leaf = {"pine": (35, 90, 55), "broadleaf": (65, 135, 45), "palms": (60, 145, 55),
                "cacti": (75, 140, 65)}[veg]  # fmt: skip
        lut = {
            1: pal.add(lit(leaf, time)),
            2: pal.add(lit(leaf, time) * 0.7),
            3: pal.add(lit((105, 70, 40), time)),
            5: pal.add(lit((120, 90, 40), time)),
            6: pal.add(snow_rgb) if snow else pal.add(lit(leaf, time) * 1.25),
            7: pal.add(lit(leaf, time) * 1.25),
        }
        if terrain not in ("coast", "lake") and len(layers) and veg in ("pine", "broadleaf"):
            prof = layers[-1][0]
            for x in np.sort(rng.integers(0, W, int(rng.integers(6, 14)))):
                s = sprite(rng, 0.45)
                stamp(canvas, s, lut, int(x) - s.shape[1] // 2, int(prof[x]) - s.shape[0] + 3)
        xs_ok = np.flatnonzero(usable & ((XX[0] < span[0]) | (XX[0] > span[1])))
        count = int(rng.integers(3, 8)) if veg in ("pine", "broadleaf") else int(rng.integers(2, 5))
        if xs_ok.size:
            for x in np.sort(rng.choice(xs_ok, min(count, xs_ok.size), replace=False)):
                s = sprite(rng, rng.uniform(0.8, 1.15))
                base = int(fg[max(x - 2, 0) : x + 3].max()) + 2
                stamp(canvas, s, lut, int(x) - s.shape[1] // 2, base - s.shape[0])

    sprites = canvas != before_sprites  # the landmark's and vegetation's pixels

    # Weather on top.
    if fog:
        fog_idx = pal.add(mix(horizon_rgb, lit((210, 212, 218), time), 0.5))
        fog2 = pal.add(mix(horizon_rgb, lit((180, 185, 195), time), 0.5))
        bands = [(hz - int(rng.integers(5, 30)), 0.8), (hz + int(rng.integers(0, 25)), 0.7),
                 (int(rng.integers(hz + 30, H)), 0.35)]  # fmt: skip
        for j, (cy, peak) in enumerate(bands):
            d = peak * np.exp(-(((YY - cy) / rng.uniform(7, 13)) ** 2))
            canvas[BAYER < d] = fog_idx if j % 2 == 0 else fog2
    if weather == "rain":
        n = int(rng.integers(180, 320))
        ry, rx = rng.integers(-8, H, n), rng.integers(0, W + 20, n)
        k = np.arange(int(rng.integers(5, 8)))
        ys = ry[:, None] + k[None, :]
        xs = rx[:, None] - k[None, :] // 3
        ok = (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
        canvas[ys[ok], xs[ok]] = pal.add(mix(lit((170, 185, 220), time), (255, 255, 255), 0.2))
    if snow:
        n = int(rng.integers(200, 340))
        fy, fx = rng.integers(0, H - 1, n), rng.integers(0, W - 1, n)
        flake = pal.add(mix(snow_rgb, (255, 255, 255), 0.6))
        canvas[fy, fx] = flake
        big = rng.random(n) < 0.3
        canvas[fy[big] + 1, fx[big]] = flake
        canvas[fy[big], fx[big] + 1] = flake

    canvas = _fit_colors(canvas, pal, rng, fg)
    rgb = pal.array()[canvas]
    return rgb, {"horizon": hz, "colors": int(len(np.unique(canvas))), "sprites": sprites}


def _fit_colors(canvas: np.ndarray, pal: Palette, rng, fg: np.ndarray) -> np.ndarray:
    """Keep the colours in use within 16..48: add ground pebbles, or merge the rarest."""
    counts = np.bincount(canvas.ravel(), minlength=len(pal.colors))
    used = np.flatnonzero(counts)
    step = 0
    while used.size < MIN_COLORS and step < 64:
        step += 1
        base = np.asarray(pal.colors[int(canvas[H - 1, step * 3 % W])], dtype=np.float64)
        idx = pal.add(base + ((-1) ** step) * 4.05 * (step + 1))
        n = 24
        py, px = rng.integers(0, H, n), rng.integers(0, W - 1, n)
        keep = py > fg[px] + 4
        canvas[py[keep], px[keep]] = idx
        canvas[py[keep], px[keep] + 1] = idx
        used = np.flatnonzero(np.bincount(canvas.ravel(), minlength=len(pal.colors)))
    if used.size > MAX_COLORS:
        colors = pal.array().astype(np.int64)
        counts = np.bincount(canvas.ravel(), minlength=len(pal.colors))
        remap = np.arange(len(pal.colors))
        order = used[np.argsort(counts[used], kind="stable")]
        keep, drop = order[-MAX_COLORS:], order[:-MAX_COLORS]
        for d in drop:
            remap[d] = keep[np.argmin(((colors[keep] - colors[d]) ** 2).sum(1))]
        canvas = remap.astype(np.uint8)[canvas]
    return canvas
