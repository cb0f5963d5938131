"""Precomputed caption states of a frozen text encoder (MiniLM), so training never runs it.

Every distinct caption of a dataset (plus the empty caption, the unconditional input of
classifier-free guidance) is encoded once. The states are stored ragged (only real tokens,
float16) in a folder beside the dataset's token cache:

    CACHE_DIR/minilm_states_L{max_len}/states.npy  (T, D) float16, all captions' tokens
    CACHE_DIR/minilm_states_L{max_len}/index.npz   texts (U,), offsets (U+1,) int64
    CACHE_DIR/minilm_states_L{max_len}/meta.json   encoder, its files' sha256, max_len, count

The cache is keyed by caption text, so it does not depend on how a loader orders or filters
pairs. `states.npy` is memory-mapped: a batch reads only its own captions. `StateRows` lets a
trainer that indexes captions by row (`ids[rows]`, `mask[rows]`) read states instead of ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pixelscene.errors import DataError

CACHE_FORMAT = 1
DEFAULT_BATCH = 64


def encoder_fingerprint(model_dir: str | os.PathLike) -> str:
    """sha256 over the encoder's tokenizer.json and model.safetensors (which fix its states)."""
    h = hashlib.sha256()
    for name in ("tokenizer.json", "model.safetensors"):
        with open(Path(model_dir) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def states_dir(cache_dir: str | os.PathLike, max_len: int) -> Path:
    return Path(cache_dir) / f"minilm_states_L{max_len}"


class CaptionStates:
    """A built cache: `batch(captions)` gives padded (states, mask) for the transformer."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.meta = json.loads((self.path / "meta.json").read_text())
            with np.load(self.path / "index.npz") as index:
                self.texts = [str(t) for t in index["texts"]]
                self.offsets = index["offsets"].astype(np.int64)
            self.states = np.load(self.path / "states.npy", mmap_mode="r")
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{self.path}: unreadable caption-state cache ({e})") from None
        if len(self.offsets) != len(self.texts) + 1 or self.offsets[-1] != len(self.states):
            raise DataError(f"{self.path}: caption-state cache is inconsistent; delete it")
        self.row_of = {t: i for i, t in enumerate(self.texts)}

    @property
    def max_len(self) -> int:
        return int(self.meta["max_len"])

    @property
    def dim(self) -> int:
        return int(self.states.shape[1])

    def __len__(self) -> int:
        return len(self.texts)

    def __contains__(self, text: str) -> bool:
        return text in self.row_of

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def get(self, text: str) -> np.ndarray:
        """One caption's states (n_tokens, D) float16."""
        try:
            i = self.row_of[text]
        except KeyError:
            raise DataError(
                f"caption {text[:60]!r} is not in the cache {self.path}; delete it to rebuild"
            ) from None
        return self.states[self.offsets[i] : self.offsets[i + 1]]

    def batch(self, texts: list[str], pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """States (B, L, D) float16, zero at padding, and mask (B, L) bool.

        L is `pad_to` (default: the cache's max_len, a fixed shape for a compiled train step).
        """
        L = self.max_len if pad_to is None else pad_to
        out = np.zeros((len(texts), L, self.dim), np.float16)
        mask = np.zeros((len(texts), L), bool)
        for b, text in enumerate(texts):
            s = self.get(text)[:L]
            out[b, : len(s)] = s
            mask[b, : len(s)] = True
        return out, mask


def build_caption_states(
    captions: Iterable[str],
    path: str | os.PathLike,
    encoder: Any,
    max_len: int,
    fingerprint: str = "",
    batch_size: int = DEFAULT_BATCH,
    progress: bool = False,
) -> CaptionStates:
    """Encode every distinct caption (and "") with `encoder` and write the cache at `path`.

    Args:
        captions: caption texts, repeats allowed.
        encoder: anything with `tokenize(texts, max_len) -> (ids, mask)`,
            `encode(texts, max_len) -> (states, mask)`, `name` (a MiniLMEncoder).
        max_len: tokens kept per caption, as at sampling time.
        fingerprint: identifies the encoder's weights (see `encoder_fingerprint`).
    Returns:
        the loaded cache. The folder appears atomically: readers never see a partial one.
    """
    texts = sorted(set(captions) | {""})
    _, tmask = encoder.tokenize(texts, max_len)
    lengths = tmask.sum(axis=1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    # Encode in order of length so batches carry little padding.
    order = np.argsort(lengths, kind="stable")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        states = None
        bar = _progress(len(texts), progress)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            enc, mask = encoder.encode([texts[i] for i in rows], max_len)
            enc, mask = np.asarray(enc), np.asarray(mask)
            if states is None:
                states = np.lib.format.open_memmap(
                    tmp / "states.npy", "w+", np.float16, (int(offsets[-1]), enc.shape[-1])
                )
            for b, i in enumerate(rows):
                n = int(lengths[i])
                if int(mask[b].sum()) != n:
                    raise RuntimeError("encoder mask disagrees with its tokenizer")
                states[offsets[i] : offsets[i + 1]] = enc[b, :n]
            bar.update(len(rows))
        bar.close()
        states.flush()
        del states
        np.savez(tmp / "index.npz", texts=np.array(texts), offsets=offsets)
        meta = {
            "format": CACHE_FORMAT,
            "encoder": getattr(encoder, "name", type(encoder).__name__),
            "encoder_sha256": fingerprint,
            "max_len": max_len,
            "count": len(texts),
            "tokens": int(offsets[-1]),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return CaptionStates(path)


def load_or_build_caption_states(
    captions: Iterable[str],
    cache_dir: str | os.PathLike,
    max_len: int,
    encoder_dir: str | os.PathLike | None = None,
    encoder: Any = None,
    progress: bool = True,
) -> CaptionStates:
    """The MiniLM states of `captions`, from CACHE_DIR/minilm_states_L{max_len} when current
    (same encoder files, same max_len, holds every caption), else built once and stored.

    Args:
        captions: every caption training will ask for (e.g. `[c for _, c in ds.pairs]`).
        cache_dir: where the dataset's caches live (beside the token cache).
        max_len: the transformer's `max_text_len`.
        encoder_dir: the MiniLM folder (default: $PIXELSCENE_TEXT_ENCODER_DIR or the package).
        encoder: an already loaded MiniLMEncoder (loaded on demand otherwise).
    """
    from pixelscene.transformer.minilm import find_model_dir

    model_dir = encoder.model_dir if encoder is not None else find_model_dir(encoder_dir)
    fingerprint = encoder_fingerprint(model_dir)
    captions = list(captions)
    path = states_dir(cache_dir, max_len)
    if (path / "meta.json").is_file():
        try:
            cached = CaptionStates(path)
        except DataError:
            cached = None
        if (
            cached is not None
            and cached.meta.get("format") == CACHE_FORMAT
            and cached.meta.get("encoder_sha256") == fingerprint
            and cached.max_len == max_len
            and all(c in cached for c in set(captions))
        ):
            return cached
    if encoder is None:
        from pixelscene.transformer.minilm import MiniLMEncoder

        encoder = MiniLMEncoder.load(model_dir)
    return build_caption_states(captions, path, encoder, max_len, fingerprint, progress=progress)


class StateRows:
    """Caption states addressed by row: `rows[idx]` -> (B, max_len, D) float16, zero-padded.

    Stands in for a (C, L) array of token ids where a trainer indexes captions by position;
    `mask` is the matching (C, max_len) bool array.
    """

    def __init__(self, cache: CaptionStates, captions: list[str]):
        self.cache = cache
        self.captions = list(captions)
        lengths = np.minimum(
            cache.lengths()[[cache.row_of[c] for c in self.captions]], cache.max_len
        )
        self.mask = np.arange(cache.max_len)[None, :] < lengths[:, None]

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.captions), self.cache.max_len, self.cache.dim

    def __getitem__(self, idx) -> np.ndarray:
        rows = np.atleast_1d(np.arange(len(self.captions))[idx])
        return self.cache.batch([self.captions[i] for i in rows])[0]


def minilm_caption_inputs(
    captions: list[str],
    cache_dir: str | os.PathLike,
    max_len: int,
    encoder_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[StateRows, np.ndarray]:
    """Training inputs for text_encoder "minilm", in place of a tokenizer's (ids, mask):
    (StateRows over `captions`, mask (C, max_len) bool), built from the cache at `cache_dir`."""
    cache = load_or_build_caption_states(
        captions, cache_dir, max_len, encoder_dir, progress=progress
    )
    rows = StateRows(cache, captions)
    return rows, rows.mask


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="caption states", unit="caption")
