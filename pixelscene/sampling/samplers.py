"""Samplers and filters: how a step's logits become the next codes.

`make_sampler(temperature, top_k, top_p, noise)` returns `sampler(logits, noise) -> tokens`.
Both kinds draw exactly from the softmax of the filtered logits `filtered(logits / T)`:
- "gumbel": the Gumbel-max trick, `argmax(filtered + g)` with one Gumbel value per token;
- "uniform": the inverse of the cumulative distribution at one uniform value u per
  position: the first token whose cumulative weight exceeds u times the total. It draws
  V times less noise, which matters for a 15,425-token vocabulary over 1,232 positions.
The noise of each image comes from its own key `mx.random.key(seed)`, so an image's codes
depend only on its prompt, seed, model and settings, not on which batch it was generated in
or in which process.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx

Sampler = Callable[[mx.array, mx.array], mx.array]


def top_k_filter(logits: mx.array, k: int) -> mx.array:
    """Keep the k largest logits of each row; the rest become -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = mx.min(mx.topk(logits, k, axis=-1), axis=-1, keepdims=True)
    return mx.where(logits < kth, -mx.inf, logits)


def top_p_filter(logits: mx.array, p: float) -> mx.array:
    """Keep the smallest set of largest logits whose probability reaches p (nucleus)."""
    if p >= 1.0:
        return logits
    desc = mx.sort(logits, axis=-1)[..., ::-1]
    probs = mx.softmax(desc, axis=-1)
    mass_before = mx.cumsum(probs, axis=-1) - probs
    threshold = mx.min(mx.where(mass_before < p, desc, mx.inf), axis=-1, keepdims=True)
    return mx.where(logits < threshold, -mx.inf, logits)


def inverse_cdf(logits: mx.array, u: mx.array) -> mx.array:
    """Tokens (B,) drawn from softmax(logits (B, V)) at uniform values u (B,) in [0, 1): the
    first token whose cumulative weight exceeds u times the total weight."""
    weights = mx.exp(logits - mx.max(logits, axis=-1, keepdims=True))
    cumulative = mx.cumsum(weights, axis=-1)
    below = mx.sum(cumulative <= u[:, None] * cumulative[:, -1:], axis=-1)
    return mx.minimum(below, logits.shape[-1] - 1).astype(mx.int32)


def make_sampler(
    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, noise: str = "gumbel"
) -> Sampler:
    """`sampler(logits (B, V), noise) -> tokens (B,) int32`, noise being Gumbel values
    (B, V) or uniform values (B,) as `noise` says; temperature 0 is greedy."""

    def sampler(logits: mx.array, values: mx.array) -> mx.array:
        if temperature <= 0:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
        if noise == "uniform":
            return inverse_cdf(logits, values)
        return mx.argmax(logits + values, axis=-1).astype(mx.int32)

    return sampler


def gumbel_noise(seeds: list[int], length: int, vocab: int) -> mx.array:
    """(B, length, vocab) Gumbel noise, row b drawn from mx.random.key(seeds[b]) alone."""
    return mx.stack([mx.random.gumbel((length, vocab), key=mx.random.key(s)) for s in seeds])


# Noise values held at once per image: a long sequence over a large vocabulary (1,232
# positions x 15,425 tokens is 76 MB an image) draws its noise a chunk of positions at a time.
NOISE_CHUNK_VALUES = 1 << 22


class GumbelNoise:
    """Each image's Gumbel noise for every position, `at(t)` -> (B, vocab), drawn a chunk
    of positions at a time so that memory stays bounded whatever the sequence length.

    Image b's noise depends on seeds[b] alone. A sequence whose noise fits in one chunk
    draws it as `gumbel_noise` does (from mx.random.key(seed)); a longer one splits that key
    into one key per chunk of `chunk` positions.
    """

    def __init__(self, seeds: list[int], length: int, vocab: int):
        self.seeds, self.length, self.vocab = list(seeds), length, vocab
        self.chunk = max(1, min(length, NOISE_CHUNK_VALUES // vocab))
        self.chunks = -(-length // self.chunk)
        self._index = -1
        self._values: mx.array | None = None

    def _draw(self, c: int) -> mx.array:
        if self.chunks == 1:
            return gumbel_noise(self.seeds, self.length, self.vocab)
        shape = (self.chunk, self.vocab)
        keys = [mx.random.split(mx.random.key(s), self.chunks)[c] for s in self.seeds]
        return mx.stack([mx.random.gumbel(shape, key=k) for k in keys])

    def chunk_of(self, t: int) -> tuple[mx.array, int]:
        """(the chunk holding position t (B, chunk, vocab), t's index in it)."""
        c = t // self.chunk
        if c != self._index:
            self._values, self._index = self._draw(c), c
            mx.eval(self._values)
        return self._values, t - c * self.chunk

    def at(self, t: int) -> mx.array:
        values, i = self.chunk_of(t)
        return values[:, i]


class UniformNoise:
    """Each image's uniform value in [0, 1) for every position, `at(t)` -> (B,), from
    mx.random.key(seed) alone (the "uniform" sampler's noise). With `draws` > 1, that many
    values per position, `at(t)` -> (B, draws): one per digit of a digits head."""

    def __init__(self, seeds: list[int], length: int, draws: int = 1):
        keys = [mx.random.key(s) for s in seeds]
        shape = (length,) if draws == 1 else (length, draws)
        self.values = mx.stack([mx.random.uniform(shape=shape, key=k) for k in keys])
        mx.eval(self.values)

    def at(self, t: int) -> mx.array:
        return self.values[:, t]


def make_noise(kind: str, seeds: list[int], length: int, vocab: int, draws: int = 1):
    """The noise a `kind` sampler reads: GumbelNoise or UniformNoise (`draws` values per
    position: a digits head's digits)."""
    if kind == "uniform":
        return UniformNoise(seeds, length, draws)
    if draws != 1:
        raise ValueError("a digits head draws with uniform noise")
    if kind != "gumbel":
        raise ValueError(f"noise must be 'gumbel' or 'uniform', got {kind!r}")
    return GumbelNoise(seeds, length, vocab)


def guided(logits: mx.array, cfg_scale: float) -> mx.array:
    """Classifier-free guidance over a batch stacked as [conditional; unconditional]."""
    cond, uncond = mx.split(logits, 2, axis=0)
    return uncond + cfg_scale * (cond - uncond)


def pick(sampler: Sampler, cfg_scale: float, guide: bool, logits, gumbel) -> mx.array:
    """Next tokens (B,) from a step's logits (B or 2B, V) and the images' noise (B, V)."""
    if guide:
        logits = guided(logits, cfg_scale)
    return sampler(logits, gumbel)
