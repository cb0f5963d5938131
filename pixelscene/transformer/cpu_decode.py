"""The transformer's decoding step in NumPy, for sampling on a CPU.

A decoding step multiplies one or two rows per image (conditional and unconditional) by
every weight matrix. MLX's CPU backend sends each of those products through sgemm, which
spends most of its time packing the weight matrix (about 25 us for a 256x256 float32
matrix on one core); a BLAS gemv streams the same matrix in about 9 us. `NumpyDecoder`
runs the same step with NumPy, one gemv per row while the batch is small and one gemm
when it is large, on weights copied out of the model once:

- each LayerNorm's scale and shift are folded into the linear layer it feeds, so a norm
  is a plain standardisation;
- the self-attention keys/values live in preallocated (B, H, S, d) buffers and a step
  attends over exactly the positions written so far;
- the caption's cross-attention keys/values and mask come from `ImageTransformer.context`
  (MLX), computed once per prompt batch.

Logits agree with `ImageTransformer.decode` to float32 rounding (tests check 1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from pixelscene.transformer.model import Context, ImageTransformer

# Up to this many rows a product is one gemv per row: each gemv streams the matrix, yet two
# of them still beat one small-M sgemm, which packs it first (256x256: 2 x 5.3 us vs 24 us).
GEMV_MAX_ROWS = 4


def _np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32), dtype=np.float32)


@dataclass
class _Linear:
    """y = x @ w + b with w stored (in, out), C-contiguous."""

    w: np.ndarray
    b: np.ndarray

    @classmethod
    def from_module(cls, linear, norm=None) -> _Linear:
        w = _np(linear.weight).T  # (in, out)
        b = _np(linear.bias) if "bias" in linear else np.zeros(w.shape[1], np.float32)
        if norm is not None:  # fold LayerNorm's affine: (xhat * g + s) @ w = xhat @ (g w) + s w
            g = _np(norm.weight) if "weight" in norm else np.ones(w.shape[0], np.float32)
            s = _np(norm.bias) if "bias" in norm else np.zeros(w.shape[0], np.float32)
            b = b + s @ w
            w = g[:, None] * w
        return cls(np.ascontiguousarray(w, dtype=np.float32), b.astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] > GEMV_MAX_ROWS:
            out = x @ self.w
        else:
            out = np.empty((x.shape[0], self.w.shape[1]), np.float32)
            for i in range(x.shape[0]):
                np.dot(x[i], self.w, out=out[i])
        out += self.b
        return out


@dataclass
class _Block:
    qkv: _Linear  # norm1 folded in
    proj: _Linear
    cross_q: _Linear  # norm2 folded in
    cross_proj: _Linear
    fc1: _Linear  # norm3 folded in
    fc2: _Linear


def _standardise(x: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm without its affine (folded into the next linear layer)."""
    n = x.shape[-1]
    x = x - np.add.reduce(x, axis=-1, keepdims=True) / n
    var = np.einsum("ij,ij->i", x, x)[:, None]
    x *= 1.0 / np.sqrt(var / n + eps)
    return x


def _softmax_rows(s: np.ndarray) -> np.ndarray:
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


def _attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias=None) -> np.ndarray:
    """One query per (row, head): q (B, H, d) pre-scaled, k/v (B, H, n, d) -> (B, H, d)."""
    s = np.matmul(k, q[..., None])[..., 0]  # (B, H, n)
    if bias is not None:
        s += bias
    return np.matmul(_softmax_rows(s)[:, :, None, :], v)[:, :, 0]


class NumpyDecoder:
    """A frozen copy of an `ImageTransformer`'s decoder that steps in NumPy.

    Usage: `state = dec.start(ctx)` for a batch's `Context` (rows in the same order as the
    tokens), then `logits = dec.step(state, tokens, t)` for t = 0, 1, ... with the token
    (B,) int at position t (BOS first). Weights are copied at construction: rebuild after
    the model's weights change.
    """

    def __init__(self, model: ImageTransformer):
        self.dim = model.cfg.embed_dim
        self.heads = model.num_heads
        self.head_dim = self.dim // self.heads
        self.seq_len = model.seq_len
        self.eps = float(model.norm.eps)
        self.scale = np.float32(1.0 / np.sqrt(self.head_dim))
        self.token_embedding = _np(model.token_embedding.weight)
        self.pos_embedding = _np(model.pos_embedding)
        self.blocks = [
            _Block(
                qkv=_Linear.from_module(b.self_attn.qkv, b.norm1),
                proj=_Linear.from_module(b.self_attn.proj),
                cross_q=_Linear.from_module(b.cross_attn.q, b.norm2),
                cross_proj=_Linear.from_module(b.cross_attn.proj),
                fc1=_Linear.from_module(b.mlp.fc1, b.norm3),
                fc2=_Linear.from_module(b.mlp.fc2),
            )
            for b in model.blocks
        ]
        self.head = _Linear.from_module(model.head, model.norm)

    def start(self, ctx: Context) -> dict:
        """Per-batch state: empty self-attention caches and the caption's keys/values."""
        cross = [(_np(k), _np(v)) for k, v in ctx.kv]
        B = cross[0][0].shape[0]
        shape = (B, self.heads, self.seq_len, self.head_dim)
        return {
            "cross": cross,
            "bias": _np(ctx.bias)[:, :, 0, :],  # (B, 1, L)
            "pooled": None if ctx.pooled is None else _np(ctx.pooled)[:, 0],  # (B, dim)
            "keys": [np.zeros(shape, np.float32) for _ in self.blocks],
            "values": [np.zeros(shape, np.float32) for _ in self.blocks],
        }

    def step(self, state: dict, tokens: np.ndarray, t: int) -> np.ndarray:
        """Logits (B, V) for the tokens (B,) at position t; writes their keys/values."""
        if not 0 <= t < self.seq_len:
            raise ValueError(f"position {t} outside 0..{self.seq_len - 1}")
        B, H, d = len(tokens), self.heads, self.head_dim
        x = self.token_embedding[np.asarray(tokens)] + self.pos_embedding[t]
        if state["pooled"] is not None:
            x += state["pooled"]
        for i, blk in enumerate(self.blocks):
            qkv = blk.qkv(_standardise(x, self.eps)).reshape(B, 3, H, d)
            keys, values = state["keys"][i], state["values"][i]
            keys[:, :, t] = qkv[:, 1]
            values[:, :, t] = qkv[:, 2]
            a = _attend(qkv[:, 0] * self.scale, keys[:, :, : t + 1], values[:, :, : t + 1])
            x += blk.proj(a.reshape(B, self.dim))
            q = blk.cross_q(_standardise(x, self.eps)).reshape(B, H, d) * self.scale
            ck, cv = state["cross"][i]
            x += blk.cross_proj(_attend(q, ck, cv, state["bias"]).reshape(B, self.dim))
            h = blk.fc1(_standardise(x, self.eps))
            np.maximum(h, 0.0, out=h)
            x += blk.fc2(h)
        return self.head(_standardise(x, self.eps))
