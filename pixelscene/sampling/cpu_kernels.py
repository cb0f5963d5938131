"""The cpu engine's kernels: `CpuDecoder`'s decoding step as one function compiled by Numba.

A step at batch 1 with guidance has two rows, and it is bound by reading the weights (22.5 MB
of float32 at `base`), not by arithmetic; NumPy also spends as long again dispatching the
step's ~40 small products and their temporaries. Here the whole step is one compiled call
that releases the GIL (a large batch runs one call per part, on its own thread):

- each weight row is read once for all rows of the step: four weight rows at a time are
  multiplied into every pair of rows, with float32 accumulators the compiler vectorises;
- weights may be stored as float16 bits (int16), converted to float32 in registers as they
  are read (F16C on x86, native on arm64; exact): models are saved as float16, so this
  halves the bytes read and changes no value;
- with few rows, the weight rows four groups ahead are prefetched while a group is
  multiplied, so more of the reads from memory are in flight at once;
- attention reads each head's keys/values front to back over exactly the positions written,
  with a vectorised exp (`_exp`).

Compiled on first use and cached on disk beside this file (Numba's cache), so later
processes load the machine code instead of compiling it again.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from pixelscene import expf

# Reassociation lets the compiler vectorise the dot products. No nnan/ninf: the caption mask
# is a large negative bias, and softmax must stay exact about it.
_FAST = {"reassoc", "contract", "nsz", "arcp"}
_F0 = np.float32(0.0)
# `_linear` prefetches the weight rows this far ahead (four groups of four), for products of
# up to this many rows
_AHEAD = 16
_PREFETCH_MAX_ROWS = 8


@intrinsic
def _half_to_float(typingctx, bits):
    """The float16 with these bits (int16), as float32: LLVM's `fpext half to float`, one
    vcvtph2ps (x86 F16C) or fcvt (arm64) per 8 or 4 values once vectorised; exact."""

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.int16), codegen


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to start loading the cache line holding array.flat[index] (LLVM's
    llvm.prefetch: a read, kept in all cache levels); changes nothing, faults on nothing."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
            "llvm.prefetch.p0i8",
        )  # fmt: skip
        address = builder.bitcast(builder.gep(data, [args[1]]), byte_ptr)
        builder.call(fn, [address, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(array, index), codegen


def _weight(row, k):
    """Weight k of a row, as float32: float32 as stored, float16 bits (int16) converted."""


@overload(_weight, inline="always")
def _weight_impl(row, k):
    if row.dtype == types.int16:
        return lambda row, k: _half_to_float(row[k])
    return lambda row, k: row[k]


@nb.njit(fastmath=_FAST, cache=True)
def weights_as_float32(w):
    """A weight row (K,) as float32, read through `_weight` (for tests)."""
    out = np.empty(w.shape[0], np.float32)
    for k in range(w.shape[0]):
        out[k] = _weight(w, k)
    return out


@nb.njit(fastmath=_FAST, cache=True)
def _linear(w, b, x, out):
    """out = x @ w.T + b for w (N, K) float32 or float16 bits (int16), x (R, K).

    Four weight rows at a time, each multiplied into every pair of rows with eight float32
    accumulators; a last group of fewer rows repeats its last one, so every output comes
    out of the same loop and a product over some of w's rows (`step`'s token range) gives
    exactly those outputs of the whole product. With few rows the product waits on memory
    (the hardware prefetcher alone keeps too few loads in flight), so while a group is
    multiplied the group four ahead is prefetched."""
    N, K = w.shape
    R = x.shape[0]
    flat = w.reshape(-1)
    line = 64 // w.itemsize  # elements per cache line
    ahead = _AHEAD if R <= _PREFETCH_MAX_ROWS else N  # many rows: bound by arithmetic
    for n in range(0, N, 4):
        for e in range((n + ahead) * K, min(n + ahead + 4, N) * K, line):
            _prefetch(flat, e)
        n1, n2, n3 = min(n + 1, N - 1), min(n + 2, N - 1), min(n + 3, N - 1)
        w0, w1, w2, w3 = w[n], w[n1], w[n2], w[n3]
        for r in range(0, R, 2):
            x0 = x[r]
            x1 = x[r + 1] if r + 1 < R else x[r]
            a0 = a1 = a2 = a3 = c0 = c1 = c2 = c3 = _F0
            for k in range(K):
                u, v = x0[k], x1[k]
                p0, p1, p2, p3 = _weight(w0, k), _weight(w1, k), _weight(w2, k), _weight(w3, k)
                a0 += p0 * u
                a1 += p1 * u
                a2 += p2 * u
                a3 += p3 * u
                c0 += p0 * v
                c1 += p1 * v
                c2 += p2 * v
                c3 += p3 * v
            out[r, n3] = a3 + b[n3]  # a repeated row is written first, then as its own
            out[r, n2] = a2 + b[n2]
            out[r, n1] = a1 + b[n1]
            out[r, n] = a0 + b[n]
            if r + 1 < R:
                out[r + 1, n3] = c3 + b[n3]
                out[r + 1, n2] = c2 + b[n2]
                out[r + 1, n1] = c1 + b[n1]
                out[r + 1, n] = c0 + b[n]


@nb.njit(fastmath=_FAST, cache=True)
def _layer_norm(x, g, b, eps, out):
    R, D = x.shape
    for r in range(R):
        mean = _F0
        for i in range(D):
            mean += x[r, i]
        mean /= D
        var = _F0
        for i in range(D):
            c = x[r, i] - mean
            out[r, i] = c
            var += c * c
        inv = np.float32(1.0) / np.sqrt(var / D + eps)
        for i in range(D):
            out[r, i] = out[r, i] * inv * g[i] + b[i]


_LOG2E, _LN2_HI, _LN2_LO = (np.float32(c) for c in (expf.LOG2E, expf.LN2_HI, expf.LN2_LO))
_EXP_POLY = tuple(np.float32(c) for c in expf.POLY)


@nb.njit(fastmath=_FAST, cache=True)
def _exp(x, bits):
    """x = exp(x) in place for x <= 0, to float32 rounding (Cephes' expf polynomial), in
    loops the compiler vectorises (a libm call per element cost more than the attention
    arithmetic). Below -87 it returns exp(-87) ~ 1.6e-38 instead of a smaller number or 0;
    bits is uint32 scratch of x's length."""
    c0, c1, c2, c3, c4, c5 = _EXP_POLY
    for j in range(x.shape[0]):
        v = max(x[j], np.float32(-87.0))
        k = np.floor(v * _LOG2E + np.float32(0.5))
        r = v - k * _LN2_HI - k * _LN2_LO
        p = ((((c0 * r + c1) * r + c2) * r + c3) * r + c4) * r + c5
        x[j] = p * r * r + r + np.float32(1.0)
        bits[j] = np.uint32(np.int32(k) + 127) << np.uint32(23)
    scale = bits.view(np.float32)
    for j in range(x.shape[0]):
        x[j] *= scale[j]


@nb.njit(fastmath=_FAST, cache=True)
def _exp_from_top(x, bits):
    """x = exp(x - max(x)) in place: softmax's weights, the largest 1. (The largest is the
    same in any order, and each difference is one rounding.)"""
    top = np.float32(-np.inf)
    for j in range(x.shape[0]):
        top = max(top, x[j])
    for j in range(x.shape[0]):
        x[j] -= top
    _exp(x, bits)


@nb.njit(fastmath=_FAST, cache=True)
def exp_nonpositive(x):
    """`_exp` on its own: x = exp(x) in place, for x <= 0."""
    _exp(x, np.empty(x.shape[0], np.uint32))


@nb.njit(fastmath=_FAST, cache=True)
def _attend(q, keys, values, kv_rows, lengths, bias, scores, bits, out):
    """One query per (row, head) over keys/values (K, H, d, S), stored transposed (dimension
    i of position j at [e, h, i, j]): row r reads entry kv_rows[r] over its first
    lengths[kv_rows[r]] positions.

    q, out (R, H * d); bias (K, S) additive, or with no rows for none; scores (float32) and
    bits (uint32) are scratch of at least S. The scores of all positions build up four
    dimensions at a time, and each output dimension is a sum over positions: every inner
    loop runs over positions, which lie contiguous, so it is vectorised across them and
    reads four rows of the cache front to back (a loop over the 64 dimensions of one key
    would end in a horizontal sum for every position). Indexes whole arrays rather than
    slicing them (a slice costs reference counting); rows that share an entry (one caption's
    images) reread it from cache, not memory."""
    R = q.shape[0]
    H, d = keys.shape[1], keys.shape[2]
    scale = np.float32(1.0) / np.sqrt(np.float32(d))
    has_bias = bias.shape[0] > 0
    full = d - d % 4
    for r in range(R):
        e = kv_rows[r]
        n = lengths[e]
        s, b = scores[:n], bits[:n]
        for h in range(H):
            base = h * d
            for j in range(n):
                s[j] = _F0
            for i in range(0, full, 4):
                q0, q1 = q[r, base + i] * scale, q[r, base + i + 1] * scale
                q2, q3 = q[r, base + i + 2] * scale, q[r, base + i + 3] * scale
                for j in range(n):
                    s[j] += (
                        q0 * keys[e, h, i, j] + q1 * keys[e, h, i + 1, j]
                        + q2 * keys[e, h, i + 2, j] + q3 * keys[e, h, i + 3, j]
                    )  # fmt: skip
            for i in range(full, d):
                q0 = q[r, base + i] * scale
                for j in range(n):
                    s[j] += q0 * keys[e, h, i, j]
            if has_bias:
                for j in range(n):
                    s[j] += bias[e, j]
            _exp_from_top(s, b)
            total = _F0
            for j in range(n):
                total += s[j]
            inv = np.float32(1.0) / total
            for i in range(0, full, 4):
                a0 = a1 = a2 = a3 = _F0
                for j in range(n):
                    p = s[j]
                    a0 += p * values[e, h, i, j]
                    a1 += p * values[e, h, i + 1, j]
                    a2 += p * values[e, h, i + 2, j]
                    a3 += p * values[e, h, i + 3, j]
                out[r, base + i] = a0 * inv
                out[r, base + i + 1] = a1 * inv
                out[r, base + i + 2] = a2 * inv
                out[r, base + i + 3] = a3 * inv
            for i in range(full, d):
                a0 = _F0
                for j in range(n):
                    a0 += s[j] * values[e, h, i, j]
                out[r, base + i] = a0 * inv


@nb.njit(cache=True, nogil=True)
def pick_uniform(logits, guide, scale, temperature, u, out):
    """Tokens as `samplers.inverse_cdf` draws them from `guided` logits: out[r] (N,) from
    row r of logits (N or 2N, n), or with guide from rows r (conditional) and N + r
    (unconditional) as `uncond + scale * (cond - uncond)`, divided by temperature, at the
    uniform value u[r]: the first token whose cumulative weight exceeds u[r] times the total.

    No fast-math here: guidance, the division and the cumulative sum (front to back) round
    as NumPy's float32 operations do; only the exponential differs, `_exp`'s being accurate
    to float32 rounding (weights below exp(-87) count as exp(-87), next to nothing).
    Logits outside a position's token range carry a bias of -1e9 and weigh exactly 0, so
    the caller passes the range's columns and adds its first token."""
    N, n = out.shape[0], logits.shape[1]
    g = np.empty(n, np.float32)
    cumulative = np.empty(n, np.float32)
    bits = np.empty(n, np.uint32)
    for r in range(N):
        if guide:
            for j in range(n):
                cond, uncond = logits[r, j], logits[N + r, j]
                g[j] = (uncond + scale * (cond - uncond)) / temperature
        else:
            for j in range(n):
                g[j] = logits[r, j] / temperature
        _exp_from_top(g, bits)
        total = _F0
        for j in range(n):
            total += g[j]
            cumulative[j] = total
        below = np.searchsorted(cumulative, u[r] * total, side="right")
        out[r] = min(below, n - 1)


@nb.njit(fastmath=_FAST, cache=True, nogil=True)
def step(x, t, eps, keys, values, cross_k, cross_v, cross_bias, cross_rows, cross_lengths, norms,
         final_norm,
         qkv_w, qkv_b, proj_w, proj_b, cq_w, cq_b, cp_w, cp_b, fc1_w, fc1_b, fc2_w, fc2_b,
         head_w, head_b, logits):  # fmt: skip
    """One decoding step for rows x (R, D) (token + position embeddings) at position t.

    keys/values (layers, R, H, d, S), transposed as `_attend` reads them, get position t
    written. The captions: cross_k/cross_v (layers, C, H, d, L) and cross_bias (C, L) for C distinct captions, row r reading caption
    cross_rows[r] (R,) over its first cross_lengths[c] (C,) positions (past them the bias only
    masks). norms (layers, 3, 2, D) hold norm1..3 (scale, shift); final_norm (2, D);
    *_w (layers, out, in) float32 or float16 bits (int16), *_b (layers, out); logits (R, V) is
    written. x is overwritten with the residual stream."""
    R, D = x.shape
    H, d = keys.shape[2], keys.shape[3]
    normed = np.empty((R, D), np.float32)
    qkv = np.empty((R, 3 * D), np.float32)
    att = np.empty((R, D), np.float32)
    tmp = np.empty((R, D), np.float32)
    hidden = np.empty((R, fc1_w.shape[1]), np.float32)
    scores = np.empty(max(t + 1, cross_v.shape[4]), np.float32)
    bits = np.empty(scores.shape[0], np.uint32)
    no_bias = np.empty((0, 0), np.float32)
    self_rows = np.arange(R)
    self_lengths = np.full(R, t + 1)
    for layer in range(qkv_w.shape[0]):
        nl = norms[layer]
        _layer_norm(x, nl[0, 0], nl[0, 1], eps, normed)
        _linear(qkv_w[layer], qkv_b[layer], normed, qkv)
        kl, vl = keys[layer], values[layer]
        for r in range(R):
            for h in range(H):
                for i in range(d):
                    kl[r, h, i, t] = qkv[r, D + h * d + i]
                    vl[r, h, i, t] = qkv[r, 2 * D + h * d + i]
        _attend(qkv[:, :D], kl, vl, self_rows, self_lengths, no_bias, scores, bits, att)
        _linear(proj_w[layer], proj_b[layer], att, tmp)
        x += tmp
        _layer_norm(x, nl[1, 0], nl[1, 1], eps, normed)
        _linear(cq_w[layer], cq_b[layer], normed, tmp)
        _attend(
            tmp, cross_k[layer], cross_v[layer], cross_rows, cross_lengths, cross_bias, scores,
            bits, att,
        )  # fmt: skip
        _linear(cp_w[layer], cp_b[layer], att, tmp)
        x += tmp
        _layer_norm(x, nl[2, 0], nl[2, 1], eps, normed)
        _linear(fc1_w[layer], fc1_b[layer], normed, hidden)
        np.maximum(hidden, _F0, hidden)
        _linear(fc2_w[layer], fc2_b[layer], hidden, tmp)
        x += tmp
    _layer_norm(x, final_norm[0], final_norm[1], eps, normed)
    _linear(head_w, head_b, normed, logits)


def warm_up() -> None:
    """Compile (or load from Numba's cache) `step` for both weight formats and `pick_uniform`,
    with arrays shaped and laid out as `CpuDecoder` and the pick pass them, so a worker's
    first job does not wait."""
    layers, rows, heads, d, seq, text, vocab = 1, 2, 2, 4, 3, 2, 5
    dim = heads * d
    f32 = np.float32
    for dtype in (np.int16, f32):
        weights = []
        for out, inp in ((3 * dim, dim), (dim, dim), (dim, dim), (dim, dim), (4 * dim, dim)):
            weights += [np.zeros((layers, out, inp), dtype), np.zeros((layers, out), f32)]
        weights += [np.zeros((layers, dim, 4 * dim), dtype), np.zeros((layers, dim), f32)]
        step(
            np.zeros((rows, dim), f32), 0, f32(1e-5),
            np.zeros((layers, rows, heads, d, seq), f32), np.zeros((layers, rows, heads, d, seq), f32),
            np.zeros((layers, rows, heads, d, text), f32), np.zeros((layers, rows, heads, d, text), f32),
            np.zeros((rows, text), f32), np.arange(rows), np.full(rows, text),
            np.ones((layers, 3, 2, dim), f32), np.ones((2, dim), f32),
            *weights, np.zeros((vocab, dim), dtype), np.zeros(vocab, f32), np.empty((rows, vocab), f32),
        )  # fmt: skip
    pick_uniform(
        np.zeros((rows, vocab), f32), True, f32(2.0), f32(1.0), np.zeros(1, f32),
        np.empty(1, np.int32),
    )  # fmt: skip
