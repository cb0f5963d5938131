"""A generated image on disk: its PNG (palette, upscale, tEXt metadata saying how it was made)
and, where asked, its code grid as JSON, so `pixelscene decode` can redo the PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pixelscene.output.codes import codes_to_json
from pixelscene.output.png import generation_metadata, save_png, write_file


class Generated(Protocol):
    """What `save_generated` reads of an image (`pipeline.GeneratedImage`)."""

    prompt: str
    seed: int
    codes: np.ndarray  # (rows, cols) int
    pixels: np.ndarray  # (H, W, 3) uint8


def save_generated(
    path: str | os.PathLike,
    image: Generated,
    *,
    model_name: str,
    model_version: str,
    settings: dict[str, Any],
    palette: str = "none",
    palette_spec: str | None = None,
    scale: int = 1,
    codes_path: str | os.PathLike | None = None,
) -> tuple[Path, Path | None]:
    """Write a generated image's PNG and, with `codes_path`, its code grid; both atomically.

    Args:
        path: the PNG to write.
        image: the image, as `PixelScene.generate` returns it.
        model_name, model_version: the model that made it.
        settings: the sampling settings used (temperature, top_k, top_p, cfg_scale).
        palette: the palette as the caller named it; the PNG's metadata and the code grid
            record it.
        palette_spec: the palette to apply when `palette` is a name only this process can
            resolve (a palette file it names); the code grid then leaves the palette out,
            since `decode` elsewhere could not resolve it either.
        scale: the nearest-neighbour upscale factor.
        codes_path: where to write the code grid as JSON; None: no code grid.

    Returns:
        The PNG's path and the code grid's (None when not written).
    """
    metadata = generation_metadata(
        prompt=image.prompt,
        seed=image.seed,
        settings=settings,
        model_name=model_name,
        model_version=model_version,
    )
    metadata["palette"] = palette
    metadata["scale"] = str(scale)
    path = save_png(
        path, image.pixels, palette if palette_spec is None else palette_spec, scale, metadata
    )
    if codes_path is None:
        return path, None
    text = codes_to_json(
        image.codes,
        prompt=image.prompt,
        seed=image.seed,
        model_name=model_name,
        model_version=model_version,
        settings=settings,
        palette=palette if palette_spec is None else None,
        scale=scale,
    )
    codes_path = Path(codes_path)
    write_file(codes_path, text.encode())
    return path, codes_path
