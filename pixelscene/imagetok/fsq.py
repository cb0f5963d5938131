"""Finite scalar quantization (Mentzer et al., 2023): each code dimension is bounded and
rounded to a few levels; the codebook is the grid of their products.

No codebook, no commitment loss and no dead-code restarts: every grid point is reachable,
so usage stays high by construction. Gradients pass the rounding straight through.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np


class FSQ:
    """Quantize (..., d) values to `levels` per dimension; codes are ints in [0, prod)."""

    def __init__(self, levels: list[int]):
        self.levels = list(levels)
        self.dim = len(levels)
        self.codebook_size = math.prod(levels)
        lv = np.asarray(levels, dtype=np.float32)
        self._half_width = mx.array(np.floor(lv / 2))
        self._half_l = mx.array((lv - 1) * (1 - 1e-3) / 2)
        self._offset = mx.array(np.where(lv % 2 == 0, 0.5, 0.0).astype(np.float32))
        self._shift = mx.array(
            np.arctanh(np.where(lv % 2 == 0, 0.5, 0.0) / ((lv - 1) * (1 - 1e-3) / 2))
        )
        basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)
        self._basis = mx.array(basis)

    def bound(self, z: mx.array) -> mx.array:
        return mx.tanh(z + self._shift) * self._half_l - self._offset

    def quantize(self, z: mx.array) -> mx.array:
        """(..., d) floats -> the nearest grid point, scaled to [-1, 1] (straight-through)."""
        b = self.bound(z)
        q = b + mx.stop_gradient(mx.round(b) - b)
        return q / self._half_width

    def to_codes(self, q: mx.array) -> mx.array:
        """Scaled grid points (..., d) -> int32 codes (...)."""
        digits = mx.round(q * self._half_width + self._half_width).astype(mx.int32)
        return (digits * self._basis).sum(axis=-1)

    def from_codes(self, codes: mx.array) -> mx.array:
        """int codes (...) -> scaled grid points (..., d)."""
        digits = (codes[..., None] // self._basis) % mx.array(self.levels, dtype=mx.int32)
        return (digits.astype(mx.float32) - self._half_width) / self._half_width
