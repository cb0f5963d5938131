"""Palettes for game-ready output: palette files (.gpl, .pal, .hex), the VGA default
palette, a palette fitted to an image (median cut + k-means), and reducing an image to one.

A palette is a (N, 3) uint8 array; `apply_palette` turns uint8 (H, W, 3) pixels into
(H, W) indices into it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pixelscene.errors import OutputError

MAX_COLOURS = 256


def parse_palette_file(path: str | os.PathLike) -> np.ndarray:
    """Read a .gpl, .pal (JASC) or .hex palette into (N, 3) uint8; errors name file and line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gpl", ".pal", ".hex"):
        raise OutputError(f"{path}: unknown palette file type (use .gpl, .pal or .hex)")
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise OutputError(f"cannot read palette file {path}: {e.strerror}") from None
    parser = {".gpl": _parse_gpl, ".pal": _parse_jasc, ".hex": _parse_hex}[suffix]
    colours = parser(path, lines)
    if not colours:
        raise OutputError(f"{path}: the palette has no colours")
    if len(colours) > MAX_COLOURS:
        raise OutputError(f"{path}: {len(colours)} colours; a PNG palette holds at most 256")
    return np.array(colours, dtype=np.uint8)


def _rgb(path: Path, lineno: int, fields: list[str]) -> tuple[int, int, int]:
    try:
        values = [int(f) for f in fields]
    except ValueError:
        raise OutputError(
            f"{path}:{lineno}: expected three integers R G B, got {' '.join(fields)!r}"
        ) from None
    if any(not 0 <= v <= 255 for v in values):
        raise OutputError(f"{path}:{lineno}: colour values must be in 0..255, got {values}")
    return values[0], values[1], values[2]


def _parse_gpl(path: Path, lines: list[str]) -> list[tuple[int, int, int]]:
    if not lines or lines[0].strip() != "GIMP Palette":
        raise OutputError(f"{path}:1: a .gpl file must start with 'GIMP Palette'")
    colours = []
    for lineno, line in enumerate(lines[1:], start=2):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key = text.split(":", 1)[0]
        if ":" in text and key in ("Name", "Columns"):
            continue
        fields = text.split()
        if len(fields) < 3:
            raise OutputError(f"{path}:{lineno}: expected 'R G B [name]', got {text!r}")
        colours.append(_rgb(path, lineno, fields[:3]))
    return colours


def _parse_jasc(path: Path, lines: list[str]) -> list[tuple[int, int, int]]:
    if len(lines) < 3 or lines[0].strip() != "JASC-PAL":
        raise OutputError(f"{path}:1: a .pal file must start with 'JASC-PAL', '0100', a count")
    if lines[1].strip() != "0100":
        raise OutputError(f"{path}:2: expected version '0100', got {lines[1].strip()!r}")
    try:
        count = int(lines[2].strip())
    except ValueError:
        raise OutputError(
            f"{path}:3: expected the colour count, got {lines[2].strip()!r}"
        ) from None
    colours = []
    for lineno, line in enumerate(lines[3:], start=4):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise OutputError(f"{path}:{lineno}: expected 'R G B', got {line.strip()!r}")
        colours.append(_rgb(path, lineno, fields))
    if len(colours) != count:
        raise OutputError(
            f"{path}:3: the header says {count} colours but the file lists {len(colours)}"
        )
    return colours


def _parse_hex(path: Path, lines: list[str]) -> list[tuple[int, int, int]]:
    colours = []
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith(";"):
            continue
        digits = text.removeprefix("#")
        if len(digits) != 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise OutputError(f"{path}:{lineno}: expected a colour RRGGBB, got {text!r}")
        colours.append((int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)))
    return colours


def vga_palette() -> np.ndarray:
    """The VGA mode 13h default palette as (256, 3) uint8 (8-bit values)."""
    from pixelscene.data.vga import VGA_DEFAULT_PALETTE

    palette = np.asarray(VGA_DEFAULT_PALETTE, dtype=np.int64).reshape(-1, 3)
    if palette.max() <= 63:  # stored as 6-bit DAC values
        palette = (palette * 255 + 31) // 63
    return palette.astype(np.uint8)


def auto_palette(pixels: np.ndarray, n: int, kmeans_iters: int = 4) -> np.ndarray:
    """The `n` colours that best fit an image: weighted median cut refined by k-means.

    Deterministic (no random init). An image with at most `n` distinct colours gets exactly
    those colours; any other image gets `n` distinct colours (centres that round to the same
    RGB are merged and the freed entries go to the image's worst-served colours).
    """
    if not 2 <= n <= MAX_COLOURS:
        raise OutputError(f"auto palette size must be in 2..256, got {n}")
    colours, counts = _unique_colours(pixels)
    if len(colours) <= n:
        return colours.astype(np.uint8)

    def score(box: np.ndarray) -> float:
        # Split first the box with the largest spread weighted by its pixel count.
        if len(box) < 2:
            return -1.0
        return float(np.ptp(colours[box], axis=0).max()) * float(counts[box].sum())

    boxes = [np.arange(len(colours))]
    scores = [score(boxes[0])]
    while len(boxes) < n:
        i = int(np.argmax(scores))
        if scores[i] <= 0:
            break
        box = boxes.pop(i)
        scores.pop(i)
        channel = int(np.argmax(np.ptp(colours[box], axis=0)))
        order = box[np.argsort(colours[box, channel], kind="stable")]
        cum = np.cumsum(counts[order])
        cut = int(np.searchsorted(cum, cum[-1] / 2))
        cut = min(max(cut, 1), len(order) - 1)
        halves = [order[:cut], order[cut:]]
        boxes[i:i] = halves
        scores[i:i] = [score(h) for h in halves]
    centres = np.stack([np.average(colours[b], axis=0, weights=counts[b]) for b in boxes])
    for _ in range(kmeans_iters):
        labels = _nearest(colours, centres)
        weight = np.bincount(labels, weights=counts, minlength=len(centres))
        for c in range(3):
            total = np.bincount(labels, weights=counts * colours[:, c], minlength=len(centres))
            centres[:, c] = np.where(weight > 0, total / np.maximum(weight, 1e-12), centres[:, c])
    palette = np.clip(np.rint(centres), 0, 255).astype(np.uint8)
    _, first = np.unique(palette, axis=0, return_index=True)
    palette = palette[np.sort(first)]
    while len(palette) < n:  # refill merged entries: the colour costing the most error
        nearest = palette[_nearest(colours, palette)].astype(np.float64)
        error = counts * ((colours - nearest) ** 2).sum(axis=1)
        palette = np.concatenate([palette, colours[[int(np.argmax(error))]].astype(np.uint8)])
    return palette


def _unique_colours(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = pixels.reshape(-1, 3).astype(np.int64)
    keys = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, counts = np.unique(keys, return_counts=True)
    colours = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1)
    return colours.astype(np.float64), counts.astype(np.float64)


def _nearest(colours: np.ndarray, palette: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of the nearest palette entry (squared RGB distance) for each colour."""
    pal = palette.astype(np.float64)
    out = np.empty(len(colours), dtype=np.int64)
    for start in range(0, len(colours), chunk):
        c = colours[start : start + chunk].astype(np.float64)
        d = (c * c).sum(1)[:, None] - 2.0 * c @ pal.T + (pal * pal).sum(1)[None, :]
        out[start : start + chunk] = np.argmin(d, axis=1)
    return out


def resolve_palette(spec: str | None, pixels: np.ndarray) -> np.ndarray | None:
    """Turn a palette spec into a (N, 3) uint8 palette for these pixels (None = keep RGB)."""
    if spec is None or spec == "none":
        return None
    if spec == "vga":
        return vga_palette()
    if spec.startswith("auto:"):
        try:
            n = int(spec[5:])
        except ValueError:
            raise OutputError(
                f"palette {spec!r}: expected auto:N with N an integer in 2..256"
            ) from None
        return auto_palette(pixels, n)
    if spec.startswith("auto"):
        raise OutputError(f"palette {spec!r}: expected auto:N with N an integer in 2..256")
    return parse_palette_file(spec)


def check_palette_spec(spec: str | None) -> None:
    """Fail early (before generating anything) on a spec that cannot work."""
    if spec is None or spec in ("none", "vga"):
        return
    if spec.startswith("auto"):
        resolve_palette(spec, np.zeros((2, 2, 3), dtype=np.uint8))
        return
    parse_palette_file(spec)


def quantize(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map each pixel to the index of its nearest palette colour: (H, W) uint8."""
    h, w, _ = pixels.shape
    flat = pixels.reshape(-1, 3).astype(np.int64)
    keys = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inverse = np.unique(keys, return_inverse=True)
    colours = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1)
    return _nearest(colours, palette)[inverse.reshape(-1)].astype(np.uint8).reshape(h, w)


def apply_palette(pixels: np.ndarray, spec: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Reduce an image to a palette.

    Returns:
        (indices (H, W) uint8, palette (N, 3) uint8), or (pixels, None) for spec none/None.
    """
    palette = resolve_palette(spec, pixels)
    if palette is None:
        return pixels, None
    return quantize(pixels, palette), palette
