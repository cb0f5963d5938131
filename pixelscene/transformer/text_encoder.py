"""Learned caption encoder: a small pre-norm transformer that sees a padding mask.

Padding never changes the states of real tokens: attention to padded keys is masked out and
padded positions are zeroed on the way out.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from pixelscene.config import TransformerConfig

NEG_INF = -1e9  # finite, so a caption that is all padding gives zeros, not NaN


def mask_bias(mask: mx.array) -> mx.array:
    """(B, L) bool -> (B, 1, 1, L) additive attention bias."""
    return mx.where(mask, 0.0, NEG_INF).astype(mx.float32)[:, None, None, :]


def split_heads(x: mx.array, heads: int) -> mx.array:
    """(B, L, D) -> (B, heads, L, D // heads); one position needs no transpose (no copy)."""
    B, L, D = x.shape
    if L == 1:
        return x.reshape(B, heads, 1, D // heads)
    return x.reshape(B, L, heads, D // heads).transpose(0, 2, 1, 3)


def merge_heads(x: mx.array) -> mx.array:
    """(B, H, L, d) -> (B, L, H * d)."""
    B, H, L, d = x.shape
    if L == 1:
        return x.reshape(B, 1, H * d)
    return x.transpose(0, 2, 1, 3).reshape(B, L, H * d)


def attention(q: mx.array, k: mx.array, v: mx.array, mask) -> mx.array:
    """Scaled dot-product attention over (B, H, T, d) with a bool, additive or "causal" mask."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


class MLP(nn.Module):
    """ReLU MLP: on the CPU, GELU's transcendentals cost more than the matmuls around them."""

    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.fc2 = nn.Linear(dim * ratio, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(nn.relu(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)
        self.dropout = nn.Dropout(dropout)

    def __call__(self, x: mx.array, bias: mx.array) -> mx.array:
        q, k, v = mx.split(self.qkv(self.norm1(x)), 3, axis=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        x = x + self.dropout(self.proj(merge_heads(attention(q, k, v, bias))))
        return x + self.dropout(self.mlp(self.norm2(x)))


class TextEncoder(nn.Module):
    """(ids (B, L) int, mask (B, L) bool) -> states (B, L, text_embed_dim), zero at padding."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        dim = cfg.text_embed_dim
        self.token_embedding = nn.Embedding(cfg.text_vocab_size, dim)
        self.pos_embedding = mx.random.normal((cfg.max_text_len, dim)) * 0.02
        self.layers = [
            EncoderLayer(dim, cfg.text_num_heads, cfg.mlp_ratio, cfg.dropout)
            for _ in range(cfg.text_num_layers)
        ]
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(self, ids: mx.array, mask: mx.array) -> mx.array:
        B, L = ids.shape
        x = self.dropout(self.token_embedding(ids) + self.pos_embedding[:L])
        bias = mask_bias(mask)
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x) * mask[..., None]
