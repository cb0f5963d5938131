"""Labelled scenes for the attribute probe: a synthetic dataset's images, average-pooled, and
the index of each attribute's value (from its attributes.jsonl)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np

from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.data.datasets import read_image, read_jsonl, to_float
from pixelscene.errors import DataError

POOL = 2  # the probe's default input: 200x320 images average-pooled to 100x160
IMAGE_HW = (200, 320)


def pool_images(images: np.ndarray | mx.array, factor: int = POOL) -> np.ndarray:
    """Average-pool float (B, H, W, C) images by `factor`: (B, 200, 320, 3) -> (B, 100, 160, 3)."""
    x = np.asarray(images, dtype=np.float32)
    if factor == 1:
        return x
    B, H, W, C = x.shape
    return x.reshape(B, H // factor, factor, W // factor, factor, C).mean(axis=(2, 4))


def load_attribute_data(
    data_dir: str | os.PathLike,
    limit: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    chunk: int = 64,
    pool: int = POOL,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pooled images (N, 200/pool, 320/pool, 3) float16 and label indices per attribute.

    `transform` maps float (B, 200, 320, 3) images before pooling (e.g. a VQGAN round trip).
    With `cache_dir` (and no transform) the decoded arrays are kept in an npz there, keyed by
    the folder, its attributes.jsonl (size, mtime), the limit and the pooling.
    Bad lines and unknown values raise DataError naming file and line.
    """
    data_dir = Path(data_dir)
    attr_file = data_dir / "attributes.jsonl"
    if not attr_file.is_file():
        raise DataError(
            f"{attr_file}: attributes file not found (make one with `pixelscene synth`)"
        )
    cache = None
    if cache_dir is not None and transform is None:
        st = attr_file.stat()
        key = f"{data_dir.resolve()}|{st.st_size}|{st.st_mtime_ns}|{limit}|{pool}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        cache = Path(cache_dir) / f"{data_dir.name}-{digest}-p{pool}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                return z["pooled"], {k: z[f"label_{k}"] for k in ATTRIBUTES}

    def fail(message: str) -> None:
        raise DataError(message)

    rows = read_jsonl(attr_file, ("image", *ATTRIBUTES), fail)[: limit or None]
    if not rows:
        raise DataError(f"{attr_file}: no images listed")
    labels = {k: np.zeros(len(rows), np.int64) for k in ATTRIBUTES}
    for i, row in enumerate(rows):
        for k, values in ATTRIBUTES.items():
            if row[k] not in values:
                raise DataError(f"{attr_file}:{row['_line']}: unknown {k} {row[k]!r}")
            labels[k][i] = values.index(row[k])
    H, W = IMAGE_HW
    pooled = np.zeros((len(rows), H // pool, W // pool, 3), np.float16)
    for start in range(0, len(rows), chunk):
        batch = np.stack(
            [
                to_float(read_image(data_dir / "images" / r["image"]))
                for r in rows[start : start + chunk]
            ]
        )
        if transform is not None:
            batch = transform(batch)
        pooled[start : start + len(batch)] = pool_images(batch, pool)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.tmp.npz")
        np.savez(tmp, pooled=pooled, **{f"label_{k}": v for k, v in labels.items()})
        os.replace(tmp, cache)
    return pooled, labels


def load_sprite_maps(
    data_dir: str | os.PathLike,
    limit: int | None = None,
    cell: int = 16,
    cache_dir: str | os.PathLike | None = None,
    min_cover: float = 0.08,
) -> dict[str, np.ndarray]:
    """Per-cell sprite classes of a `pixelscene synth` dataset, the probe's auxiliary targets.

    The image (padded at the bottom to a multiple of `cell`) is cut into cell x cell squares;
    each gets, for "landmark" and for "vegetation", the index of the scene's value where that
    sprite covers at least `min_cover` of the cell, the index of "none" where it covers nothing,
    and -1 (not scored) in between. Returns {"landmark", "vegetation"}: (N, rows, cols) int8.
    Sprites come from re-rendering each record (`data.sprites`), about 300 scenes a second.
    """
    from pixelscene.data.sprites import scene_sprite_parts, synth_records

    data_dir = Path(data_dir)
    attr_file = data_dir / "attributes.jsonl"
    cache = None
    if cache_dir is not None and attr_file.is_file():
        st = attr_file.stat()
        key = f"{data_dir.resolve()}|{st.st_size}|{st.st_mtime_ns}|{limit}|{cell}|{min_cover}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        cache = Path(cache_dir) / f"{data_dir.name}-{digest}-maps{cell}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                return {k: z[k] for k in ("landmark", "vegetation")}
    records = list(synth_records(data_dir).values())[: limit or None]
    H, W = IMAGE_HW
    pad = -H % cell
    rows, cols = (H + pad) // cell, W // cell
    maps = {k: np.zeros((len(records), rows, cols), np.int8) for k in ("landmark", "vegetation")}
    for i, record in enumerate(records):
        for k, mask in zip(maps, scene_sprite_parts(record), strict=True):
            cover = np.pad(mask.astype(np.float32), ((0, pad), (0, 0)))
            cover = cover.reshape(rows, cell, cols, cell).mean(axis=(1, 3))
            values = ATTRIBUTES[k]
            target = np.full((rows, cols), values.index("none"), np.int8)
            if record[k] != "none":
                target[cover > 0] = -1
                target[cover >= min_cover] = values.index(record[k])
            maps[k][i] = target
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.tmp.npz")
        np.savez(tmp, **maps)
        os.replace(tmp, cache)
    return maps
