"""The cpu engine's digits head: a grid code's digits drawn in one compiled call.

`NumpyDigitHead.sample` costs five small NumPy products, a pick and an embedding sum per
digit: about 0.1 ms a position, a third of a `pixel-tiny` image's time at batch 1. This is
the same computation (`DigitHead.sample`: each digit's MLP, the guided pick at its uniform
value, the digit's embedding added for the next one) as one Numba call per position, reusing
`cpu_kernels`' products and pick. Values agree with the MLX head to float32 rounding, as the
decoding step's do.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from pixelscene.sampling.cpu_kernels import _linear, pick_uniform


@nb.njit(cache=True, nogil=True)
def sample_digits(h, levels, basis, fc1_w, fc1_b, fc2_w, fc2_b, prefix, guide, scale,
                  temperature, u, out):  # fmt: skip
    """Codes out (N,) int32 from final states h (R, D), R = N or with guidance 2N rows
    [conditional; unconditional]. Digit k: logits = fc2_k(silu(fc1_k(z))) over its levels[k]
    values, picked as `pick_uniform` does at u[k] (N,); z starts at h and adds prefix[k] of
    the digit picked. fc1_w (K, D, D), fc1_b (K, D); fc2_w (K, M, D), fc2_b (K, M) with M the
    largest level (rows past levels[k] unused); prefix (K, M, D); basis (K,) int."""
    R, D = h.shape
    N = out.shape[0]
    K = levels.shape[0]
    z = h.copy()
    a = np.empty((R, D), np.float32)
    digit = np.empty(N, np.int32)
    for r in range(N):
        out[r] = 0
    for k in range(K):
        n = levels[k]
        logits = np.empty((R, n), np.float32)
        _linear(fc1_w[k], fc1_b[k], z, a)
        for r in range(R):
            for i in range(D):
                v = a[r, i]
                a[r, i] = v / (np.float32(1.0) + np.exp(-v))
        _linear(fc2_w[k, :n], fc2_b[k, :n], a, logits)
        pick_uniform(logits, guide, scale, temperature, u[k], digit)
        for r in range(N):
            out[r] += digit[r] * basis[k]
        if k + 1 < K:
            for r in range(R):
                d = digit[r % N] if guide else digit[r]
                for i in range(D):
                    z[r, i] += prefix[k, d, i]


def pack(head) -> tuple:
    """A `NumpyDigitHead`'s arrays in `sample_digits`' layout (levels .. prefix)."""
    K, M = len(head.levels), max(head.levels)
    D = head.fc1[0][0].shape[0]
    fc2_w = np.zeros((K, M, D), np.float32)
    fc2_b = np.zeros((K, M), np.float32)
    prefix = np.zeros((K, M, D), np.float32)
    for k, n in enumerate(head.levels):
        fc2_w[k, :n] = head.fc2[k][0].T
        fc2_b[k, :n] = head.fc2[k][1]
        if k < len(head.prefix):
            prefix[k, :n] = head.prefix[k]
    fc1_w = np.stack([w.T for w, _ in head.fc1])  # (K, out, in) as `_linear` reads
    fc1_b = np.stack([b for _, b in head.fc1])
    return (np.asarray(head.levels, np.int64), head.basis.astype(np.int64),
            np.ascontiguousarray(fc1_w), fc1_b, fc2_w, fc2_b, prefix)  # fmt: skip


def warm_up() -> None:
    """Compile (or load from Numba's cache) `sample_digits` for the arrays `pack` makes."""
    K, M, D, N = 2, 3, 4, 1
    f32 = np.float32
    sample_digits(
        np.zeros((2 * N, D), f32), np.array([3, 2]), np.array([1, 3]),
        np.zeros((K, D, D), f32), np.zeros((K, D), f32), np.zeros((K, M, D), f32),
        np.zeros((K, M), f32), np.zeros((K, M, D), f32), True, f32(2.0), f32(1.0),
        np.zeros((K, N), f32), np.empty(N, np.int32),
    )  # fmt: skip
