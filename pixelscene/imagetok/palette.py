"""A scene's palette as tokens: its colours (6-bit DAC levels), most frequent first up to
`size`, then ordered by luminance; every pixel's index into it.

A code of an 8x8 patch has ~12 bits: enough for a pattern and an approximate colour, not
for the exact 18-bit colour of each scene's own palette. The palette travels beside the
codes (3 tokens per colour), and the decoder chooses each pixel among its entries, so a
pixel is exact whenever the choice is right. An image with more colours than `size` keeps
its most frequent ones; the others are painted as their nearest kept colour.
"""

from __future__ import annotations

import numpy as np

EMPTY = -1  # an unused palette slot


def image_palette(levels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8/int levels (H, W, 3) in 0..63 -> (palette (size, 3) int32, EMPTY-padded;
    index (H, W) uint8 of each pixel's entry)."""
    H, W, _ = levels.shape
    lv = levels.reshape(-1, 3).astype(np.int32)
    packed = (lv[:, 0] << 12) | (lv[:, 1] << 6) | lv[:, 2]
    colours, inverse, counts = np.unique(packed, return_inverse=True, return_counts=True)
    rgb = np.stack([colours >> 12, (colours >> 6) & 63, colours & 63], axis=1)
    keep = np.argsort(-counts, kind="stable")[:size]
    kept = rgb[keep]
    luma = kept @ np.array([299, 587, 114])
    order = np.lexsort((kept[:, 2], kept[:, 1], kept[:, 0], luma))
    kept = kept[order]
    # each distinct colour -> its nearest kept colour (itself when kept)
    d = ((rgb[:, None, :] - kept[None, :, :]) ** 2).sum(-1)
    nearest = d.argmin(axis=1)
    palette = np.full((size, 3), EMPTY, dtype=np.int32)
    palette[: len(kept)] = kept
    return palette, nearest[inverse].reshape(H, W).astype(np.uint8)


def batch_palettes(levels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, H, W, 3) levels -> (palettes (B, size, 3), indices (B, H, W))."""
    pairs = [image_palette(x, size) for x in levels]
    return np.stack([p for p, _ in pairs]), np.stack([i for _, i in pairs])


def levels_of(images_uint8: np.ndarray) -> np.ndarray:
    """8-bit channels -> the nearest 6-bit DAC level, 0..63 (uint8)."""
    return np.clip(np.rint(images_uint8.astype(np.float32) * (63 / 255)), 0, 63).astype(np.uint8)
