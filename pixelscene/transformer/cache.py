"""Key/value caches for the decoder's causal self-attention, in the style of mlx-lm.

`KVCache` grows as tokens arrive (`offset` = tokens seen). `StaticKVCache` keeps buffers of
the full sequence length and writes at an array offset, so decoding steps have static shapes
and a compiled graph serves many steps; positions not yet written are masked out. Its
`window` (a Python int, part of the graph's shape) limits attention to the first `window`
slots: a sampler rounds the filled prefix up to a few window sizes, so early tokens do not
attend over all 260 slots.
"""

from __future__ import annotations

import mlx.core as mx


class KVCache:
    """Growing cache: `update_and_fetch` appends keys/values (B, H, T, d) and returns all so far."""

    step = 64

    def __init__(self):
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        prev = self.offset
        B, H, T, d = keys.shape
        if self.keys is None or prev + T > self.keys.shape[2]:
            grow = ((prev + T + self.step - 1) // self.step) * self.step
            new_k = mx.zeros((B, H, grow, d), keys.dtype)
            new_v = mx.zeros((B, H, grow, d), values.dtype)
            if self.keys is not None:
                new_k[..., :prev, :] = self.keys[..., :prev, :]
                new_v[..., :prev, :] = self.values[..., :prev, :]
            self.keys, self.values = new_k, new_v
        self.offset += T
        self.keys[..., prev : self.offset, :] = keys
        self.values[..., prev : self.offset, :] = values
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]


class StaticKVCache:
    """Fixed-length buffers (B, H, S, d) written at `offset`, an int32 array of shape (1,).

    `update_and_fetch` returns the first `window` slots (all of them when None); the caller
    keeps `offset < window`.
    """

    def __init__(
        self, keys: mx.array, values: mx.array, offset: mx.array, window: int | None = None
    ):
        self.keys = keys
        self.values = values
        self.offset = offset
        self.window = window

    @classmethod
    def empty(cls, batch: int, heads: int, length: int, head_dim: int) -> StaticKVCache:
        z = mx.zeros((batch, heads, length, head_dim), mx.float32)
        return cls(z, mx.zeros_like(z), mx.array([0], mx.int32))

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self.keys = mx.slice_update(self.keys, keys, self.offset, axes=(2,))
        self.values = mx.slice_update(self.values, values, self.offset, axes=(2,))
        if self.window is None or self.window >= self.keys.shape[2]:
            return self.keys, self.values
        return self.keys[:, :, : self.window], self.values[:, :, : self.window]
