"""Token cache: every dataset image encoded once by the VQGAN into its (13, 20) code grid.

`DIR/tokens.npz` holds `codes` (N, 13, 20) int16, `images` (N,) file names and `vqgan`, a
fingerprint of the VQGAN weights that made it; a cache made by other weights is stale.
The transformer trains on these codes instead of re-encoding images every batch.
"""

from __future__ import annotations

import hashlib
import io
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
    codes: np.ndarray  # (N, H, W) int16
    images: list[str]
    vqgan: str

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.images)}


def default_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / CACHE_NAME


def vqgan_fingerprint(vqgan_dir: str | Path) -> str:
    """Content hash of the weights that decide the codes: the encoder's and the codebook's.

    The decoder does not count, so a cache stays valid for a VQGAN whose decoder was
    fine-tuned (`pixelscene train decoder`), and other files in the folder do not count.
    """
    import mlx.core as mx

    path = Path(vqgan_dir) / "vqgan.safetensors"
    if not path.is_file():
        raise ModelLoadError(f"missing weights file {path}")
    try:
        weights = mx.load(str(path))
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({e})") from None
    digest = hashlib.sha256()
    for name in sorted(weights):
        if name.startswith(("encoder.", "quantizer.")):
            array = np.array(weights[name])
            digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def save_token_cache(path: str | Path, cache: TokenCache) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        codes=cache.codes.astype(np.int16),
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
    vqgan,
    data_dir: str | Path,
    fingerprint: str,
    out: str | Path | None = None,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> TokenCache:
    """Encode every image named in DIR/captions.jsonl once and save the cache."""
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
        codes = vqgan.encode(mx.array(np.stack(batch)))
        chunks.append(np.array(codes).astype(np.int16))
        if progress is not None:
            progress(min(start + batch_size, len(names)), len(names))
    cache = TokenCache(np.concatenate(chunks), names, fingerprint)
    save_token_cache(out or default_path(data_dir), cache)
    return cache


def ensure_token_cache(
    vqgan_dir: str | Path, data_dir: str | Path, path: str | Path | None = None
) -> TokenCache:
    """The dataset's token cache, built (or rebuilt when stale or incomplete) if needed."""
    path = Path(path) if path else default_path(data_dir)
    fingerprint = vqgan_fingerprint(vqgan_dir)
    if path.is_file():
        cache = load_token_cache(path)
        wanted = set(CaptionDataset(data_dir).images())
        if cache.vqgan == fingerprint and wanted <= set(cache.images):
            return cache
        log.info("token cache %s is stale (other VQGAN weights or new images): rebuilding", path)
    from pixelscene.vqgan import load_vqgan

    log.info("encoding %s with the VQGAN in %s into %s", data_dir, vqgan_dir, path)
    vqgan = load_vqgan(vqgan_dir)
    return encode_dataset(vqgan, data_dir, fingerprint, path)
