"""Caption tokenizer: a word vocabulary built from training captions, saved with the model.

Ids are stable across processes and machines: known words map through the saved
vocabulary, unknown words to one of a few hash buckets chosen by CRC-32 (never Python's
`hash()`, which is salted per process). PAD is 0; an empty caption is all padding, which
the model reads as the unconditional (null) prompt.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pixelscene.errors import ModelLoadError
from pixelscene.model_io import atomic_write_bytes

PAD_ID = 0
FORMAT_VERSION = 1
_WORD_RE = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lowercase, then split into words and single punctuation marks."""
    return _WORD_RE.findall(text.lower())


class Tokenizer:
    """Word-level tokenizer: id 0 = PAD, ids 1..num_buckets = UNK buckets, then words."""

    def __init__(self, words: list[str], vocab_size: int, max_length: int, num_buckets: int = 32):
        if vocab_size < 1 + num_buckets:
            raise ValueError(f"vocab_size {vocab_size} leaves no room for {num_buckets} buckets")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.num_buckets = num_buckets
        self.words = list(words)[: vocab_size - 1 - num_buckets]
        self._ids = {w: 1 + num_buckets + i for i, w in enumerate(self.words)}

    @classmethod
    def build(
        cls, captions: Iterable[str], vocab_size: int, max_length: int, num_buckets: int = 32
    ) -> Tokenizer:
        """Vocabulary of the most frequent words (ties broken alphabetically, so it is stable)."""
        counts = Counter(w for c in captions for w in split_words(c))
        words = sorted(counts, key=lambda w: (-counts[w], w))
        return cls(words, vocab_size, max_length, num_buckets)

    def word_id(self, word: str) -> int:
        known = self._ids.get(word)
        if known is not None:
            return known
        return 1 + zlib.crc32(word.encode("utf-8")) % self.num_buckets

    def encode(self, text: str) -> list[int]:
        """Ids of a caption, truncated to max_length, without padding."""
        return [self.word_id(w) for w in split_words(text)][: self.max_length]

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32 (B, max_length), mask bool (B, max_length)); True marks real tokens."""
        ids = np.full((len(texts), self.max_length), PAD_ID, dtype=np.int32)
        for i, text in enumerate(texts):
            row = self.encode(text)
            ids[i, : len(row)] = row
        return ids, ids != PAD_ID

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "num_buckets": self.num_buckets,
            "words": self.words,
        }

    def save(self, path: str | Path) -> None:
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=1).encode("utf-8"))

    @classmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        """The inverse of `to_dict`; ValueError, KeyError or TypeError if it is not one."""
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unknown format {data.get('format')!r}")
        return cls(data["words"], data["vocab_size"], data["max_length"], data["num_buckets"])

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except OSError as e:
            raise ModelLoadError(f"cannot read tokenizer {path}: {e.strerror}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise ModelLoadError(f"{path}: not a valid tokenizer file ({e})") from None
