"""The VGA's 6-bit DAC and the mode 13h default palette."""

from __future__ import annotations

import numpy as np

# The 64 levels a 6-bit DAC channel can show, as 8-bit values.
DAC_LEVELS = np.round(np.arange(64) * 255 / 63).astype(np.uint8)


def snap_to_vga_dac(rgb_uint8) -> np.ndarray:
    """Snap 8-bit channels to the nearest 6-bit DAC level: round(v*63/255)*255/63."""
    v = np.asarray(rgb_uint8, dtype=np.float64)
    return DAC_LEVELS[np.clip(np.round(v * 63 / 255), 0, 63).astype(np.int64)]


def _hue_ring(lo: int, m1: int, m2: int, m3: int, hi: int) -> list[tuple[int, int, int]]:
    """24 hues from blue through magenta, red, yellow, green and cyan back towards blue."""
    ramp = (m1, m2, m3, hi)
    down = (m3, m2, m1, lo)
    ring = [(lo, lo, hi)]
    ring += [(v, lo, hi) for v in ramp]  # red rises
    ring += [(hi, lo, v) for v in down]  # blue falls
    ring += [(hi, v, lo) for v in ramp]  # green rises
    ring += [(v, hi, lo) for v in down]  # red falls
    ring += [(lo, hi, v) for v in ramp]  # blue rises
    ring += [(lo, v, hi) for v in down[:3]]  # green falls
    return ring


def _default_palette_6bit() -> list[tuple[int, int, int]]:
    ega = [
        (0, 0, 0), (0, 0, 42), (0, 42, 0), (0, 42, 42), (42, 0, 0), (42, 0, 42), (42, 21, 0),
        (42, 42, 42), (21, 21, 21), (21, 21, 63), (21, 63, 21), (21, 63, 63), (63, 21, 21),
        (63, 21, 63), (63, 63, 21), (63, 63, 63),
    ]  # fmt: skip
    greys = [(g, g, g) for g in (0, 5, 8, 11, 14, 17, 20, 24, 28, 32, 36, 40, 45, 50, 56, 63)]
    # (value, saturation) blocks: (lo, m1, m2, m3, hi) per block, as in the BIOS table.
    blocks = [
        (0, 16, 31, 47, 63), (31, 39, 47, 55, 63), (45, 49, 54, 58, 63),
        (0, 7, 14, 21, 28), (14, 17, 21, 24, 28), (20, 22, 24, 26, 28),
        (0, 4, 8, 12, 16), (8, 10, 12, 14, 16), (11, 12, 13, 15, 16),
    ]  # fmt: skip
    colors = ega + greys
    for block in blocks:
        colors += _hue_ring(*block)
    colors += [(0, 0, 0)] * 8
    return colors


VGA_DEFAULT_PALETTE: np.ndarray = DAC_LEVELS[np.array(_default_palette_6bit(), dtype=np.int64)]
assert VGA_DEFAULT_PALETTE.shape == (256, 3)
