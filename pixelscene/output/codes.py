"""Code grids as JSON: the codes of an image with what made it (prompt, seed, model,
settings) and the output options its PNG was written with, so `decode` can redo the PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pixelscene.errors import OutputError

CODES_FORMAT = "pixelscene-codes"
CODES_FORMAT_VERSION = 1


def codes_to_json(
    codes: np.ndarray,
    *,
    prompt: str | None = None,
    seed: int | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    settings: dict[str, Any] | None = None,
    palette: str | None = None,
    scale: int | None = None,
) -> str:
    """A (rows, cols) code grid (or a row of tokens, written as one row) as JSON text, with
    what made it and, where given, the output options its PNG was written with (`decode`
    uses them unless told otherwise)."""
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[None]
    if codes.ndim != 2:
        raise ValueError(f"expected a 2-D code grid, got shape {codes.shape}")
    doc = {
        "format": CODES_FORMAT,
        "format_version": CODES_FORMAT_VERSION,
        "model": model_name,
        "model_version": model_version,
        "prompt": prompt,
        "seed": seed,
        "settings": settings or {},
        "rows": int(codes.shape[0]),
        "cols": int(codes.shape[1]),
        "codes": [[int(c) for c in row] for row in codes],
    }
    if palette is not None:
        doc["palette"] = palette
    if scale is not None:
        doc["scale"] = int(scale)
    return json.dumps(doc, indent=None, separators=(",", ":")) + "\n"


def codes_from_json(text: str, source: str = "codes") -> tuple[np.ndarray, dict[str, Any]]:
    """Parse `codes_to_json` output: ((rows, cols) int32 grid, the other fields)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise OutputError(f"{source}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(doc, dict) or doc.get("format") != CODES_FORMAT:
        raise OutputError(f"{source}: not a pixelscene code grid (format != {CODES_FORMAT!r})")
    grid = doc.get("codes")
    if (
        not isinstance(grid, list)
        or not grid
        or not isinstance(grid[0], list)
        or not grid[0]
        or not all(isinstance(r, list) and len(r) == len(grid[0]) for r in grid)
        or not all(isinstance(c, int) and not isinstance(c, bool) for r in grid for c in r)
    ):
        raise OutputError(f"{source}: 'codes' must be a rectangular list of lists of integers")
    low, high = min(min(r) for r in grid), max(max(r) for r in grid)
    if low < 0:
        raise OutputError(f"{source}: codes must be >= 0, found {low}")
    if high >= 2**31:
        raise OutputError(f"{source}: codes must be below 2**31, found {high}")
    codes = np.array(grid, dtype=np.int64)
    for key, kind, name in (
        ("settings", dict, "an object"),
        ("prompt", str, "a string"),
        ("seed", int, "an integer"),
        ("palette", str, "a string"),
        ("scale", int, "an integer"),
    ):
        value = doc.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise OutputError(f"{source}: '{key}' must be {name}, got {value!r}")
    if (doc.get("rows"), doc.get("cols")) != codes.shape:
        raise OutputError(
            f"{source}: rows/cols {doc.get('rows')}x{doc.get('cols')} do not match the grid {codes.shape}"
        )
    meta = {k: v for k, v in doc.items() if k != "codes"}
    return codes.astype(np.int32), meta


def read_codes(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise OutputError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise OutputError(f"{path}: not a text file (not UTF-8)") from None
    return codes_from_json(text, str(path))
