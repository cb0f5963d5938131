"""Samplers and filters: how a step's logits become the next codes.

`make_sampler(temperature, top_k, top_p)` returns `sampler(logits, gumbel) -> tokens`: the
Gumbel-max trick, `argmax(filtered(logits / T) + g)`, draws exactly from the softmax of the
filtered logits. The Gumbel noise of each image comes from its own key `mx.random.key(seed)`,
so an image's codes depend only on its prompt, seed, model and settings, not on which batch
it was generated in or in which process.
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


def make_sampler(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Sampler:
    """`sampler(logits (B, V), gumbel (B, V)) -> tokens (B,) int32`; temperature 0 is greedy."""

    def sampler(logits: mx.array, gumbel: mx.array) -> mx.array:
        if temperature <= 0:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
        return mx.argmax(logits + gumbel, axis=-1).astype(mx.int32)

    return sampler


def gumbel_noise(seeds: list[int], length: int, vocab: int) -> mx.array:
    """(B, length, vocab) Gumbel noise, row b drawn from mx.random.key(seeds[b]) alone."""
    return mx.stack([mx.random.gumbel((length, vocab), key=mx.random.key(s)) for s in seeds])


def guided(logits: mx.array, cfg_scale: float) -> mx.array:
    """Classifier-free guidance over a batch stacked as [conditional; unconditional]."""
    cond, uncond = mx.split(logits, 2, axis=0)
    return uncond + cfg_scale * (cond - uncond)


def pick(sampler: Sampler, cfg_scale: float, guide: bool, logits, gumbel) -> mx.array:
    """Next tokens (B,) from a step's logits (B or 2B, V) and the images' noise (B, V)."""
    if guide:
        logits = guided(logits, cfg_scale)
    return sampler(logits, gumbel)
