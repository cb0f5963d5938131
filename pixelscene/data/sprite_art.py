"""The landmark and vegetation sprites: each `sprite_*(rng)` returns a small (h, w) array of
role ids that `canvas.stamp` maps to the scene's colours."""

from __future__ import annotations

import numpy as np

from pixelscene.data.canvas import BAYER

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
