"""The "digits" output head: a grid code written as its FSQ digits, one after another.

A categorical tokenizer's code is a point of an FSQ grid: `levels` [8, 8, 8, 6, 5] make
15,360 codes, code = sum of digit_k * prod(levels[:k]). A softmax over all of them costs
15,360 logits (and as many exponentials) per position, most of a small model's training
time, and learns each code's row from the few images that use it. This head writes the
code's digits in turn instead:

    p(code | h) = prod_k p(digit_k | h, digit_0 .. digit_{k-1})

each factor a small MLP over `h + sum of the earlier digits' embeddings` with `levels[k]`
outputs: the same likelihood, 35 logits instead of 15,360. The input side shares the same
structure: a code's input embedding adds its digits' embeddings to its own row, so codes
that differ in one digit start close.

Sampling draws digit 0, then digit 1 given it, and so on, each from its own uniform value;
guidance, temperature and top-k/top-p act on each digit's logits (at temperature 1 without
filters, exactly a draw from p(code | h)).
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np


def digit_basis(levels) -> np.ndarray:
    """(K,) int: the value of one unit of each digit, prod(levels[:k])."""
    return np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int64)


def code_digits(codes: np.ndarray, levels) -> np.ndarray:
    """Codes (...,) -> their digits (..., K) int32."""
    codes = np.asarray(codes, np.int64)
    return ((codes[..., None] // digit_basis(levels)) % np.asarray(levels)).astype(np.int32)


class DigitHead(nn.Module):
    """Writes an FSQ code as its digits (see the module docstring).

    Args:
        dim: the transformer's width.
        levels: the FSQ levels, digit 0 first.
    """

    def __init__(self, dim: int, levels):
        super().__init__()
        self.levels = [int(n) for n in levels]
        self.codebook_size = int(np.prod(self.levels))
        self._basis = mx.array(digit_basis(self.levels).astype(np.int32))
        self._all_digits = mx.array(code_digits(np.arange(self.codebook_size), self.levels))
        self.inputs = [nn.Embedding(n, dim) for n in self.levels]  # added to a code's input
        self.prefix = [nn.Embedding(n, dim) for n in self.levels[:-1]]  # conditions later digits
        self.fc1 = [nn.Linear(dim, dim) for _ in self.levels]
        self.fc2 = [nn.Linear(dim, n) for n in self.levels]

    def digits(self, codes: mx.array) -> mx.array:
        """Codes (...,) -> digits (..., K) int32."""
        codes = codes.astype(mx.int32)[..., None]
        return (codes // self._basis) % mx.array(self.levels, dtype=mx.int32)

    def input_table(self) -> mx.array:
        """(codebook_size, dim): each code's sum of its digits' input embeddings."""
        return sum(emb(self._all_digits[:, k]) for k, emb in enumerate(self.inputs))

    def logits(self, k: int, z: mx.array) -> mx.array:
        """Digit k's logits (..., levels[k]) from z = h + the earlier digits' embeddings."""
        return self.fc2[k](nn.silu(self.fc1[k](z)))

    def nll(self, h: mx.array, codes: mx.array) -> mx.array:
        """-log p(code | h) per position: h (..., dim), codes (...,) -> (...,)."""
        digits = self.digits(codes)
        z, total = h, None
        for k in range(len(self.levels)):
            ce = nn.losses.cross_entropy(self.logits(k, z), digits[..., k], reduction="none")
            total = ce if total is None else total + ce
            if k + 1 < len(self.levels):
                z = z + self.prefix[k](digits[..., k])
        return total

    def log_probs(self, h: mx.array) -> mx.array:
        """log p(code | h) of every code, (..., codebook_size): for checks on small grids
        (it evaluates the head once per prefix of every code)."""
        lead = h.shape[:-1]
        out = mx.zeros((*lead, 1))
        z = h[..., None, :]  # (..., prefixes, dim), prefixes in code order of digits 0..k-1
        for k in range(len(self.levels)):
            lp = nn.log_softmax(self.logits(k, z), axis=-1)  # (..., P, levels[k])
            # code order: digit 0 varies fastest, so the new digit is the slower axis
            out = (out[..., None, :] + mx.swapaxes(lp, -1, -2)).reshape(*lead, -1)
            if k + 1 < len(self.levels):
                e = self.prefix[k].weight  # (n, dim)
                z = (z[..., None, :, :] + e[:, None, :]).reshape(*lead, -1, h.shape[-1])
        return out

    def sample(self, h: mx.array, pick_digit: Callable[[int, mx.array], mx.array], guide: bool):
        """Codes (B,) int32 drawn digit by digit from h (B, dim), or with guidance h stacked
        as [conditional; unconditional] (2B, dim). `pick_digit(k, logits)` turns digit k's
        logits (B or 2B, levels[k]) into digits (B,), guidance included."""
        z, code = h, None
        for k in range(len(self.levels)):
            d = pick_digit(k, self.logits(k, z)).astype(mx.int32)
            part = d * self._basis[k]
            code = part if code is None else code + part
            if k + 1 < len(self.levels):
                feed = mx.concatenate([d, d]) if guide else d
                z = z + self.prefix[k](feed)
        return code


class NumpyDigitHead:
    """A DigitHead's weights as float32 NumPy, for the cpu engine: the same sums."""

    def __init__(self, head: DigitHead):
        def arr(a):
            return np.array(a.astype(mx.float32), dtype=np.float32)

        self.levels = list(head.levels)
        self.basis = digit_basis(self.levels).astype(np.int32)
        self.prefix = [arr(e.weight) for e in head.prefix]
        self.fc1 = [(arr(m.weight).T.copy(), arr(m.bias)) for m in head.fc1]
        self.fc2 = [(arr(m.weight).T.copy(), arr(m.bias)) for m in head.fc2]

    def logits(self, k: int, z: np.ndarray) -> np.ndarray:
        w1, b1 = self.fc1[k]
        a = z @ w1 + b1
        a = a / (1.0 + np.exp(-a))  # silu
        w2, b2 = self.fc2[k]
        return (a @ w2 + b2).astype(np.float32)

    def sample(self, h: np.ndarray, pick_digit, guide: bool) -> np.ndarray:
        """As `DigitHead.sample`, on NumPy arrays."""
        z = h.astype(np.float32, copy=True)
        code = np.zeros(len(h) // 2 if guide else len(h), np.int32)
        for k in range(len(self.levels)):
            d = np.asarray(pick_digit(k, self.logits(k, z)), np.int32)
            code += d * self.basis[k]
            if k + 1 < len(self.levels):
                z += self.prefix[k][np.concatenate([d, d]) if guide else d]
        return code
