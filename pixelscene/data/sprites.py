"""Where the sprites of a synthetic scene are, per code of the VQGAN's grid.

Landmarks and vegetation are small sprites: a castle covers about 6 of an image's 260 codes,
so in a plain mean of the transformer's loss the codes that draw what a prompt names weigh
next to nothing against sky and ground (`TransformerTrainConfig.sprite_weight`). The
renderer is deterministic in (seed, index), so a dataset written by `pixelscene synth` is
re-rendered here to find its sprites' pixels; each re-rendered image is checked against the
stored one, so a dataset from elsewhere, or a changed renderer, fails loudly instead of
weighting the wrong codes. Coverage is cached beside the dataset (`sprites_13x20.npz`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.data.render import H, W, render_scene
from pixelscene.errors import DataError

CELL = 16  # pixels per code side


def scene_sprites(record: dict, image_path: str | Path | None = None) -> np.ndarray:
    """The (200, 320) bool mask of a synthetic scene's landmark and vegetation pixels, from its
    attributes.jsonl record; with `image_path`, the re-rendered scene must equal that image."""
    return _rerender(record, image_path)["sprites"]


def scene_sprite_parts(
    record: dict, image_path: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(landmark, vegetation) (200, 320) bool masks of a synthetic scene's sprites, as
    `scene_sprites` finds them (vegetation is what the sprites drew besides the landmark)."""
    info = _rerender(record, image_path)
    return info["landmark"], info["sprites"] & ~info["landmark"]


def _rerender(record: dict, image_path: str | Path | None) -> dict:
    """render_scene's facts for a synth record, checked against the stored image if given."""
    try:
        index = int(Path(record["image"]).stem)
        attrs = {k: record[k] for k in ATTRIBUTES}
        attrs["celestial"] = list(record["celestial"])
        seed = int(record["seed"])
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(
            f"{record.get('image', '?')}: not a `pixelscene synth` record ({e!r} missing or bad)"
        ) from None
    rgb, info = render_scene(attrs, np.random.default_rng([seed, index, 1]))
    if image_path is not None:
        stored = np.asarray(Image.open(image_path).convert("RGB"))
        if not np.array_equal(stored, rgb):
            raise DataError(
                f"{image_path}: re-rendering its record does not give this image (a dataset "
                "from another renderer version, or not from `pixelscene synth`)"
            )
    return info


def cell_coverage(mask: np.ndarray, pad_rows: tuple[int, int], cell: int = CELL) -> np.ndarray:
    """Fraction of each cell x cell square of the padded image that a (200, 320) mask
    covers, as the flattened grid (codes in raster order): (13 * 20,) float32 for 16x16
    cells and pads (4, 4)."""
    top, bottom = pad_rows
    padded = np.pad(mask.astype(np.float32), ((top, bottom), (0, 0)))
    h, w = padded.shape[0] // cell, padded.shape[1] // cell
    return padded.reshape(h, cell, w, cell).mean(axis=(1, 3)).reshape(-1)


def _cached_per_image(
    data_dir: Path,
    path: Path,
    names: list[str],
    compute,
    desc: str,
    progress: bool,
    extra: dict[str, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """One array per named image of a synthetic dataset, `compute(mask)` of its sprite mask,
    cached in `path` (with `extra` arrays, which must match for the cache to count) and
    extended when new names are asked for."""
    from tqdm import tqdm

    extra = extra or {}
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as z:
            fits = all(k in z and np.array_equal(z[k], v) for k, v in extra.items())
            if fits and "values" in z:  # else another cache's layout: rebuilt
                known = dict(zip(z["images"].tolist(), z["values"]))
    missing = [n for n in dict.fromkeys(names) if n not in known]
    if missing:
        records = synth_records(data_dir)
        for name in tqdm(missing, desc=desc, disable=not progress, unit="img"):
            if name not in records:
                raise DataError(f"{data_dir / 'attributes.jsonl'}: no record for {name}")
            known[name] = compute(scene_sprites(records[name], data_dir / "images" / name))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, images=np.array(list(known)), values=np.stack(list(known.values())), **extra)
        tmp.replace(path)
    return [known[n] for n in names]


def sprite_coverage(
    data_dir: str | Path,
    names: list[str],
    pad_rows: tuple[int, int],
    progress: bool = True,
    cell: int = CELL,
) -> np.ndarray:
    """(len(names), codes) float32 sprite coverage of each named image of a synthetic dataset
    by cells of `cell` pixels, cached in DATA_DIR/sprites_HxW.npz (extended when new names
    are asked for)."""
    data_dir = Path(data_dir)
    grid = ((H + sum(pad_rows)) // cell, W // cell)
    path = data_dir / f"sprites_{grid[0]}x{grid[1]}.npz"

    def coverage(mask: np.ndarray) -> np.ndarray:
        return cell_coverage(mask, pad_rows, cell).astype(np.float32)

    extra = {"pad_rows": np.array(pad_rows)}
    values = _cached_per_image(data_dir, path, names, coverage, "sprites", progress, extra)
    return np.stack(values).astype(np.float32)


MASKS_NAME = "sprite_masks.npz"


def sprite_masks(data_dir: str | Path, names: list[str], progress: bool = True) -> np.ndarray:
    """(len(names), 200, 320) bool: the pixels landmark and vegetation sprites cover in each
    named image of a synthetic dataset, cached (bit-packed) in DATA_DIR/sprite_masks.npz and
    extended when new names are asked for."""
    data_dir = Path(data_dir)
    packed = np.stack(
        _cached_per_image(
            data_dir, data_dir / MASKS_NAME, names, np.packbits, "sprite masks", progress
        )
    )
    return np.unpackbits(packed, axis=1, count=H * W).reshape(len(names), H, W).astype(bool)


def synth_records(data_dir: str | Path) -> dict[str, dict]:
    """A `pixelscene synth` dataset's attributes.jsonl records by image name."""
    path = Path(data_dir) / "attributes.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: missing; sprites need a `pixelscene synth` dataset")
    out = {}
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                out[record["image"]] = record
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{line_no}: bad record ({e})") from None
    return out
