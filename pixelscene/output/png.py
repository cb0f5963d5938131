"""PNG files: a palette applied, a nearest-neighbour upscale, tEXt metadata saying how the
image was made, written atomically; and the checks that fail before anything is generated."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pixelscene.errors import OutputError
from pixelscene.model_io import atomic_write_bytes
from pixelscene.output.palettes import apply_palette

MAX_SCALE = 16  # 5120x3200: enough for any preview


def upscale(pixels: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour integer upscale of (H, W) or (H, W, C); never smooth resampling."""
    if not isinstance(k, int | np.integer) or k < 1:
        raise OutputError(f"scale must be a positive integer, got {k!r}")
    if k == 1:
        return pixels
    return np.repeat(np.repeat(pixels, k, axis=0), k, axis=1)


def png_bytes(
    pixels: np.ndarray,
    palette_spec: str | None = None,
    scale: int = 1,
    metadata: dict[str, Any] | None = None,
) -> bytes:
    """Encode uint8 (H, W, 3) pixels as PNG: palette, then nearest upscale, then tEXt metadata."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) pixels, got {pixels.dtype} {pixels.shape}")
    data, palette = apply_palette(pixels, palette_spec)
    data = upscale(data, scale)
    if palette is None:
        image = Image.fromarray(np.ascontiguousarray(data), mode="RGB")
    else:
        image = Image.fromarray(np.ascontiguousarray(data), mode="P")
        image.putpalette(palette.reshape(-1).tolist(), rawmode="RGB")
    info = PngInfo()
    for key, value in (metadata or {}).items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        info.add_text(str(key), text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, optimize=False)
    return buf.getvalue()


def save_png(
    path: str | os.PathLike,
    pixels: np.ndarray,
    palette_spec: str | None = None,
    scale: int = 1,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a PNG atomically (temp file + rename); see `png_bytes`."""
    path = Path(path)
    write_file(path, png_bytes(pixels, palette_spec, scale, metadata))
    return path


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """`atomic_write_bytes`, with a failure (a folder in the way, no permission, a full
    disk) reported as an OutputError naming the path; the OSError is its `__cause__`."""
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e


def check_output_path(path: str | os.PathLike, suffix: str = ".png") -> None:
    """Fail early (before any sampling) on an output path that cannot be written."""
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise OutputError(f"output {path} must end in {suffix}")
    if path.is_dir():
        raise OutputError(f"output {path} is a folder")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {parent} is not writable")


def check_scale(scale: int) -> None:
    if not 1 <= scale <= MAX_SCALE:
        raise OutputError(f"--scale must be between 1 and {MAX_SCALE}, got {scale}")


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG as a dict of strings."""
    with Image.open(path) as image:
        image.load()
        return dict(getattr(image, "text", {}))


def generation_metadata(
    *,
    prompt: str,
    seed: int | None,
    settings: dict[str, Any],
    model_name: str,
    model_version: str,
) -> dict[str, Any]:
    """The tEXt fields every generated PNG carries, so a file found later says how to redo it."""
    meta: dict[str, Any] = {"Software": "pixelscene", "prompt": prompt}
    if seed is not None:
        meta["seed"] = str(seed)
    meta.update({k: str(v) for k, v in settings.items()})
    meta["model"] = model_name
    meta["model_version"] = model_version
    return meta


def numbered_paths(path: str | os.PathLike, count: int) -> list[Path]:
    """`out.png` for one image; `out_1.png` ... `out_N.png` for several."""
    path = Path(path)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(1, count + 1)]
