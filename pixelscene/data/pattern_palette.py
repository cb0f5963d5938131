"""Palettes for the pattern images (`pixelscene.data.patterns`): 2-64 colours as 6-bit DAC
values, made of hue ramps (harsh, muted or dark), greys, the EGA and VGA default colours,
random colours, or the few colours of an old machine; and `Colors`, which hands the drawing
code ramps of palette indices, dark to light, spread over the whole palette."""

from __future__ import annotations

import numpy as np

from pixelscene.data.vga import VGA_DEFAULT_PALETTE

_DEFAULT6 = np.rint(VGA_DEFAULT_PALETTE.astype(np.float64) * 63 / 255).astype(np.int64)
_VGA6, _EGA6 = np.unique(_DEFAULT6, axis=0), _DEFAULT6[:16]
_RETRO6 = [  # palettes of real machines, 6-bit
    [(0, 0, 0), (21, 63, 63), (63, 21, 63), (63, 63, 63)],  # CGA 1
    [(0, 0, 0), (21, 63, 21), (63, 21, 21), (63, 63, 21)],  # CGA 0
    [(4, 14, 4), (12, 24, 12), (35, 43, 4), (39, 47, 4)],  # handheld greens
    [(0, 0, 0), (63, 63, 63)],
    [(0, 0, 0), (63, 44, 0)],
]


def _hsv6(h, s, v) -> np.ndarray:
    """HSV in [0, 1] to (..., 3) 6-bit DAC values."""
    h, s, v = (np.clip(np.asarray(a, np.float64), 0, 1) for a in (h % 1.0, s, v))
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [np.choose(i, c) for c in ([v, q, p, p, t, v], [t, v, v, q, p, p], [p, p, t, v, v, q])]
    return np.rint(np.stack(rgb, -1) * 63).astype(np.int64)


def _hue_ramps(rng, n: int, sat: tuple, val: tuple, shift: float) -> list[np.ndarray]:
    """Ramps of 2-8 shades of one hue each (hue-shifted along the ramp), n colours in all."""
    ramps, left = [], n
    while left > 0:
        k = min(left, int(rng.integers(2, 9)))
        k += int(left - k == 1)
        v = np.linspace(rng.uniform(val[0], val[0] + 0.25), rng.uniform(val[1] - 0.2, val[1]), k)
        h = rng.random() + shift * (v - 0.5) * rng.choice([-1, 1])
        ramps.append(_hsv6(h, rng.uniform(*sat) * (1.15 - 0.3 * v), v))
        left -= k
    return ramps


def make_palette(rng) -> tuple[np.ndarray, list[np.ndarray]]:
    """(colours (n, 3) as 6-bit DAC values, ramps as index arrays dark to light), 2 <= n <= 64."""
    n = int(np.clip(np.rint(2 ** rng.triangular(1, 5, 6)), 2, 64))
    style = rng.choice(["hue", "ega", "muted", "grey", "random", "vga", "retro"],
                       p=[0.33, 0.12, 0.18, 0.09, 0.1, 0.1, 0.08])  # fmt: skip
    ramps: list[np.ndarray] = []
    if style == "retro" or n <= 2 and rng.random() < 0.5:
        colors = np.array(_RETRO6[rng.integers(len(_RETRO6))])
    elif style == "ega":
        colors = _EGA6[rng.choice(16, min(n, 16), replace=False)]
    elif style == "vga":
        colors = _VGA6[rng.choice(len(_VGA6), n, replace=False)]
    elif style == "random":
        colors = rng.integers(0, 64, (n, 3))
    elif style == "grey":
        k = max(2, n - int(rng.integers(0, n // 2 + 1)))
        grey = np.rint(np.linspace(rng.uniform(0, 0.2), rng.uniform(0.7, 1), k) * 63)
        ramps = [np.repeat(grey[:, None], 3, 1).astype(np.int64)]
        ramps += _hue_ramps(rng, n - k, (0.4, 1), (0.2, 1), 0.1) if n > k else []
        colors = np.concatenate(ramps)
    else:
        dark = rng.random() < 0.6
        sat, val = ((0.45, 1), (0.15, 1)) if style == "hue" else ((0.05, 0.45), (0.05, 0.75))
        ramps = _hue_ramps(rng, n - dark, sat, val, rng.uniform(0, 0.15)) if n - dark else []
        ramps = [np.zeros((1, 3), np.int64)] * dark + ramps
        colors = np.concatenate(ramps)
    colors, first, inverse = np.unique(colors, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep the colours in the order they were made
    colors, rank = colors[order], np.argsort(order)
    if len(colors) < 2:
        colors = np.array([[0, 0, 0], [63, 63, 63]])
    if ramps:
        ends = np.cumsum([len(r) for r in ramps])[:-1]
        ramps = [np.unique(rank[part]) for part in np.split(inverse.ravel(), ends)]
    return colors, [r.astype(np.uint8) for r in ramps if len(r) >= 2]


class Colors:
    """The image's palette as the drawing code asks for it: ramps, darkest, lightest."""

    def __init__(self, rng, colors: np.ndarray, ramps: list[np.ndarray]):
        self.rng, self.n = rng, len(colors)
        luma = colors @ np.array([0.3, 0.59, 0.11])
        self.order = np.argsort(luma, kind="stable").astype(np.uint8)  # dark to light
        # Ramps of colours picked at random, ordered by brightness: most of what an unordered
        # palette (EGA, random) has; a few extra for a palette made of hue ramps.
        count = max(2, self.n // 4) if not ramps else int(rng.integers(0, 3))
        lum_ramps = [rng.choice(self.n, min(self.n, int(rng.integers(2, 7))), replace=False)
                     for _ in range(count)]  # fmt: skip
        self.ramps = [self._by_lum(r) for r in ramps] + [self._by_lum(r) for r in lum_ramps]
        self.ramps.append(self.order)
        self.uses = np.zeros(len(self.ramps))
        self.dark, self.light = int(self.order[0]), int(self.order[-1])

    def _by_lum(self, r: np.ndarray) -> np.ndarray:
        rank = np.argsort(self.order)
        return r[np.argsort(rank[r], kind="stable")].astype(np.uint8)

    def ramp(self, k: int) -> np.ndarray:
        """k colour indices dark to light from one ramp (repeated when the ramp is short)."""
        long = [i for i, r in enumerate(self.ramps) if len(r) >= k] or [len(self.ramps) - 1]
        w = 1.0 / (1 + self.uses[long]) ** 2  # spread the drawing over the whole palette
        i = long[self.rng.choice(len(long), p=w / w.sum())]
        self.uses[i] += 1
        r = self.ramps[i]
        if len(r) <= k:
            return r[np.rint(np.linspace(0, len(r) - 1, k)).astype(int)]
        if self.rng.random() < 0.6:
            s = int(self.rng.integers(0, len(r) - k + 1))
            return r[s : s + k]
        return r[np.sort(self.rng.choice(len(r), k, replace=False))]

    def pick(self) -> int:
        return int(self.rng.integers(self.n))

    def contrast(self, idx: int) -> int:
        """A colour far in brightness from idx."""
        rank = int(np.flatnonzero(self.order == idx)[0])
        q = max(1, self.n // 4)
        part = self.order[-q:] if rank < self.n / 2 else self.order[:q]
        return int(part[self.rng.integers(len(part))])
