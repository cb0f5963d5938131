"""A token cache's codes paired with their images' captions, and the batch of any step.

Batch k of a run is a pure function of (seed, k), so a resumed transformer run replays
exactly the data the uninterrupted one would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pixelscene.config import TransformerConfig
from pixelscene.data.datasets import CaptionDataset, epoch_order
from pixelscene.data.text_states import minilm_caption_inputs
from pixelscene.data.token_cache import TokenCache
from pixelscene.errors import DataError

if TYPE_CHECKING:
    from pixelscene.transformer.tokenizer import Tokenizer


@dataclass
class CaptionedCodes:
    """Codes (N, S) int32 with each image's tokenized captions (C, L) and their ranges."""

    codes: np.ndarray
    ids: np.ndarray
    mask: np.ndarray
    start: np.ndarray  # (N,) first caption row of each image
    count: np.ndarray  # (N,) captions of each image
    names: list[str] = field(default_factory=list)  # (N,) image file names
    sprites: np.ndarray | None = None  # (N, S) sprite coverage of each code (`sprite_weight`)

    def __len__(self) -> int:
        return len(self.codes)


def captioned_codes(
    cache: TokenCache,
    dataset: CaptionDataset,
    tok: Tokenizer,
    cfg: TransformerConfig | None = None,
    progress: bool = True,
) -> CaptionedCodes:
    """Pair every cached image that has captions with all of its captions.

    With text_encoder "minilm", `ids` holds the captions' precomputed MiniLM states (read by
    row, see `StateRows`) instead of token ids; they are cached beside the token cache.
    """
    index = cache.index()
    by_image = dataset.captions_by_image()
    missing = [n for n in by_image if n not in index]
    if missing:
        raise DataError(f"token cache lacks {len(missing)} captioned images, e.g. {missing[0]}")
    names = list(by_image)
    captions = [c for n in names for c in by_image[n]]
    count = np.array([len(by_image[n]) for n in names], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    codes = cache.codes[[index[n] for n in names]].reshape(len(names), -1).astype(np.int32)
    if cfg is not None and cfg.text_encoder == "minilm":
        ids, mask = minilm_caption_inputs(
            captions, dataset.captions_file.parent, cfg.max_text_len, progress=progress
        )
    else:
        ids, mask = tok.encode_batch(captions)
    return CaptionedCodes(codes, ids, mask, start, count, names)


def batch_at(data: CaptionedCodes, batch_size: int, seed: int, step: int):
    """The batch of a given step: a pure function of (seed, step), so resume is exact."""
    idx, rows = batch_rows(data, batch_size, seed, step)
    return data.codes[idx], data.ids[rows], data.mask[rows]


def batch_rows(data: CaptionedCodes, batch_size: int, seed: int, step: int):
    """`batch_at`'s images (B,) and the caption row picked for each (B,)."""
    per_epoch = max(1, len(data) // batch_size)
    epoch, j = divmod(step, per_epoch)
    order = epoch_order(len(data), seed, epoch)
    idx = order[j * batch_size : (j + 1) * batch_size]
    if len(idx) < batch_size:  # dataset smaller than a batch: wrap around
        idx = np.resize(order, batch_size)
    pick = np.random.default_rng([seed, epoch, 7]).integers(0, 1 << 30, len(data))
    rows = data.start[idx] + pick[idx] % data.count[idx]
    return idx, rows
