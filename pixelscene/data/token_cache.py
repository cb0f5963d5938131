"""Token cache: every dataset image encoded once by a model's image tokenizer.

`DIR/tokens.npz` holds `codes` (N, *shape) int16 (the VQGAN's (13, 20) grids, or the
categorical tokenizer's token rows: `Config.token_layout`), `images` (N,) file names and
`vqgan`, a fingerprint of the tokenizer that made it (the key keeps its first name); a cache
made by another tokenizer is stale. The transformer trains on these codes instead of
re-encoding images every batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixelscene.data.datasets import CaptionDataset, read_image, to_float
from pixelscene.errors import DataError, ModelLoadError
from pixelscene.model_io import atomic_write_bytes

log = logging.getLogger(__name__)
CACHE_NAME = "tokens.npz"


@dataclass
class TokenCache:
    codes: np.ndarray  # (N, *shape) int16
    images: list[str]
    vqgan: str  # the fingerprint of the image tokenizer that made it

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.images)}


def default_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / CACHE_NAME


def vqgan_fingerprint(model_dir: str | Path) -> str:
    """Content hash of what decides a model folder's codes: its image tokenizer's encoder
    (and the VQGAN's codebook) weights, and for a categorical tokenizer its config section.

    The decoder does not count, so a cache stays valid for a VQGAN whose decoder was
    fine-tuned (`pixelscene train decoder`), and other files in the folder do not count.
    """
    import mlx.core as mx

    from pixelscene.image_tokenizers import WEIGHTS, tokenizer_kind

    kind = tokenizer_kind(model_dir)
    name, prefixes = WEIGHTS[kind]
    path = Path(model_dir) / name
    if not path.is_file():
        raise ModelLoadError(f"missing weights file {path}")
    try:
        weights = mx.load(str(path))
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({e})") from None
    digest = hashlib.sha256()
    if kind != "vqgan":  # FSQ levels, palette size: not weights, but they decide the codes
        from pixelscene.model_io import load_model_config

        section = load_model_config(model_dir).tokenizer
        digest.update(json.dumps(dataclasses.asdict(section), sort_keys=True).encode())
    for name in sorted(weights):
        if name.startswith(prefixes):
            array = np.array(weights[name])
            digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def save_token_cache(path: str | Path, cache: TokenCache) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        codes=cache.codes.astype(np.int16 if cache.codes.max(initial=0) < 2**15 else np.int32),
        images=np.array(cache.images, dtype=str),
        vqgan=np.array(cache.vqgan),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_token_cache(path: str | Path) -> TokenCache:
    path = Path(path)
    try:
        with np.load(path) as data:
            return TokenCache(
                codes=data["codes"],
                images=[str(s) for s in data["images"]],
                vqgan=str(data["vqgan"]),
            )
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a readable token cache ({e})") from None


def encode_dataset(
    tokenizer,
    data_dir: str | Path,
    fingerprint: str,
    out: str | Path | None = None,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> TokenCache:
    """Encode every image named in DIR/captions.jsonl once with an image tokenizer
    (`pixelscene.image_tokenizers`) and save the cache."""
    import mlx.core as mx

    dataset = CaptionDataset(data_dir)
    names = dataset.images()
    if not names:
        raise DataError(f"{data_dir}: no captioned images to encode")
    chunks = []
    for start in range(0, len(names), batch_size):
        batch = [
            to_float(read_image(dataset.image_dir / n, dataset.image_size))
            for n in names[start : start + batch_size]
        ]
        codes = tokenizer.encode(mx.array(np.stack(batch)))
        chunks.append(np.array(codes).astype(np.int16))
        if progress is not None:
            progress(min(start + batch_size, len(names)), len(names))
    cache = TokenCache(np.concatenate(chunks), names, fingerprint)
    save_token_cache(out or default_path(data_dir), cache)
    return cache


def ensure_token_cache(
    vqgan_dir: str | Path, data_dir: str | Path, path: str | Path | None = None
) -> TokenCache:
    """The dataset's token cache for the image tokenizer of the model folder `vqgan_dir`
    (a VQGAN or a categorical tokenizer), built (or rebuilt when stale or incomplete)."""
    path = Path(path) if path else default_path(data_dir)
    fingerprint = vqgan_fingerprint(vqgan_dir)
    if path.is_file():
        cache = load_token_cache(path)
        wanted = set(CaptionDataset(data_dir).images())
        if cache.vqgan == fingerprint and wanted <= set(cache.images):
            return cache
        log.info("token cache %s is stale (another tokenizer or new images): rebuilding", path)
    from pixelscene.image_tokenizers import load_tokenizer

    log.info("encoding %s with the image tokenizer in %s into %s", data_dir, vqgan_dir, path)
    return encode_dataset(load_tokenizer(vqgan_dir), data_dir, fingerprint, path)
