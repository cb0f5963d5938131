"""The drawing surface shared by the scene renderer and its sprites: a 320x200 canvas of
palette indices, the 4x4 Bayer matrix for ordered dithering, the per-scene palette (every
colour snapped to the VGA DAC's 6-bit levels), stamping sprites of role ids onto it, stepped
height profiles for terrain edges, dithered colour ramps, and keeping a finished scene within
16-48 colours."""

from __future__ import annotations

import numpy as np

from pixelscene.data.vga import DAC_LEVELS

H, W = 200, 320
YY = np.arange(H)[:, None]
XX = np.arange(W)[None, :]
_B4 = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]])
BAYER = ((np.tile(_B4, (H // 4, W // 4)) + 0.5) / 16.0).astype(np.float32)  # (H, W) in (0, 1)
MIN_COLORS, MAX_COLORS = 16, 48  # colours a finished scene uses
_LEVELS = [int(v) for v in DAC_LEVELS]


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


# ----------------------------------------------------------------------------- the scene


def gradient(keys, n: int) -> list[np.ndarray]:
    """n colours evenly spaced along a ramp through the key colours."""
    keys = np.asarray(keys, dtype=np.float64)
    pos = np.linspace(0, 1, len(keys))
    t = np.linspace(0, 1, n)
    return [np.array([np.interp(ti, pos, keys[:, c]) for c in range(3)]) for ti in t]


def dithered_ramp(t: np.ndarray, idxs: list[int], y0: int = 0) -> np.ndarray:
    """Ordered-dither a per-row field t (rows, 1) in [0, 1] over a colour ramp, starting at
    canvas row y0: solid bands with Bayer-dithered transitions."""
    v = np.clip(t, 0, 1) * (len(idxs) - 1)
    base = np.floor(v)
    frac = np.clip((v - base - 0.5) * 3.0 + 0.5, 0, 1).astype(np.float32)
    k = base.astype(np.int64) + (frac > BAYER[y0 : y0 + t.shape[0]])
    return np.asarray(idxs + idxs[-1:], dtype=np.uint8)[k]


def fit_colors(canvas: np.ndarray, pal: Palette, rng, fg: np.ndarray) -> np.ndarray:
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
