"""Text-conditioned decoder that writes an image's codes as tokens, one at a time: the
VQGAN's 13x20 grid (260 tokens), or the categorical tokenizer's palette then 26x40 grid
(`Config.token_layout`).

Pre-norm blocks: causal self-attention (KV-cached when sampling), cross-attention to the
caption states, MLP. Generation starts from BOS = codebook_size, a token outside the
vocabulary, and produces all the image's tokens; where the layout has segments, each
position's logits are restricted to its segment's tokens (a palette slot never gets a grid
code). Text conditioning is split from the decoder: the
decoder reads `(states, mask)` of any width `text_dim` through `text_proj`, so states from a
frozen external encoder plug in as well as the learned `TextEncoder`'s. A caption with no
real tokens (empty, or dropped for classifier-free guidance) reads a learned null state.
"""

from __future__ import annotations

from typing import NamedTuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from pixelscene.config import Config, TransformerConfig
from pixelscene.transformer.cache import KVCache
from pixelscene.transformer.digits import DigitHead
from pixelscene.transformer.text_encoder import (
    MLP,
    TextEncoder,
    attention,
    mask_bias,
    merge_heads,
    split_heads,
)

# The logit of a token its position may not take: finite, so guidance (a difference of two
# such logits) and the loss stay finite, and low enough that it is never sampled.
MASKED = -1e9


class Context(NamedTuple):
    """Caption keys/values for every block's cross-attention, computed once per prompt."""

    kv: list[tuple[mx.array, mx.array]]  # per block: (B, H, L, d) keys and values
    bias: mx.array  # (B, 1, 1, L) additive mask
    pooled: mx.array | None = None  # (B, 1, dim) added to every input position (pooled_text)

    def arrays(self) -> list[mx.array]:
        """Flat list of the context's arrays (for compiled functions); see `from_arrays`."""
        flat = [a for kv in self.kv for a in kv] + [self.bias]
        return flat if self.pooled is None else flat + [self.pooled]

    @classmethod
    def from_arrays(cls, arrays: list[mx.array], num_blocks: int) -> Context:
        kv = [(arrays[2 * i], arrays[2 * i + 1]) for i in range(num_blocks)]
        pooled = arrays[2 * num_blocks + 1] if len(arrays) > 2 * num_blocks + 1 else None
        return cls(kv, arrays[2 * num_blocks], pooled)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def __call__(self, x: mx.array, offset, cache=None) -> mx.array:
        B, T, D = x.shape
        q, k, v = mx.split(self.qkv(x), 3, axis=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        S = k.shape[2]
        if cache is None and T > 1:
            mask = "causal"
        else:  # query at absolute position offset+i sees keys 0..offset+i
            q_pos = mx.arange(T) + offset
            mask = mx.arange(S)[None, :] <= q_pos[:, None]
        return self.proj(merge_heads(attention(q, k, v, mask)))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def context_kv(self, ctx: mx.array) -> tuple[mx.array, mx.array]:
        k, v = mx.split(self.kv(ctx), 2, axis=-1)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def __call__(self, x: mx.array, kv: tuple[mx.array, mx.array], bias: mx.array) -> mx.array:
        q = split_heads(self.q(x), self.heads)
        return self.proj(merge_heads(attention(q, kv[0], kv[1], bias)))


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)
        self.dropout = nn.Dropout(dropout)

    def __call__(self, x, kv, bias, offset, cache=None):
        x = x + self.dropout(self.self_attn(self.norm1(x), offset, cache))
        x = x + self.dropout(self.cross_attn(self.norm2(x), kv, bias))
        return x + self.dropout(self.mlp(self.norm3(x)))


class ImageTransformer(nn.Module):
    """Autoregressive code writer conditioned on caption states.

    Args:
        cfg: the transformer section of the config.
        codebook_size: distinct image tokens (the image tokenizer's vocabulary); BOS is the
            extra id `codebook_size`.
        seq_len: tokens per image (13 * 20 = 260 for the VQGAN).
        text_dim: width of the conditioning states (default cfg.text_embed_dim; 384 for
            frozen MiniLM states). The learned TextEncoder exists only for
            cfg.text_encoder == "learned".
        segments: (start, stop, low, high): positions start..stop-1 may only take tokens
            low..high-1 (`TokenLayout.segments`); the others' logits are pushed to
            `MASKED`, in training and sampling alike. None: every token everywhere.
        digits: the grid codes' FSQ levels (`TokenLayout.digits`), for cfg.head "digits":
            grid positions (the segment of tokens 0..prod(digits)-1) are written digit by
            digit (`DigitHead`); the other segments' tokens, codebook .. vocab-1 (the
            palette's levels and EMPTY), keep a softmax over just those (`head`).
    """

    def __init__(
        self,
        cfg: TransformerConfig,
        codebook_size: int = 512,
        seq_len: int = 260,
        text_dim: int | None = None,
        segments: tuple[tuple[int, int, int, int], ...] = (),
        digits: tuple[int, ...] = (),
    ):
        super().__init__()
        self.cfg = cfg
        self.codebook_size = codebook_size
        self.bos_id = codebook_size
        self.seq_len = seq_len
        # the segments' logit biases, (segments + 1, V), and each position's row of it, or
        # None; underscored: not parameters
        self._token_bias, self._segment_of = token_bias(segments, seq_len, codebook_size)
        self._token_ranges = np.tile(np.array([0, codebook_size], np.intp), (seq_len, 1))
        for start, stop, low, high in segments:
            self._token_ranges[start:stop] = low, high
        self.num_heads = cfg.num_heads
        dim = cfg.embed_dim
        if cfg.text_encoder == "learned":
            self.text_encoder = TextEncoder(cfg)
        self.text_dim = text_dim or cfg.text_embed_dim
        self.text_proj = nn.Linear(self.text_dim, dim)
        self.null_context = mx.random.normal((1, dim)) * 0.02
        if cfg.pooled_text:
            self.pooled_mlp = MLP(dim, 2)
        self.token_embedding = nn.Embedding(codebook_size + 1, dim)
        self.pos_embedding = mx.random.normal((seq_len, dim)) * 0.02
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = [
            DecoderBlock(dim, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
            for _ in range(cfg.num_layers)
        ]
        self.norm = nn.LayerNorm(dim)
        self.grid_start = seq_len  # digits head: positions grid_start.. write FSQ codes
        self.rest_low = 0  # the first token `head` scores
        if cfg.head == "digits":
            self.grid_start, self.rest_low = digit_layout(segments, seq_len, digits)
            self.digit_head = DigitHead(dim, digits)
        self.head = nn.Linear(dim, codebook_size - self.rest_low)

    def encode_text(self, ids: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
        """Learned encoder: token ids (B, L) and mask (B, L) -> (states (B, L, D), mask)."""
        if "text_encoder" not in self:
            raise ValueError(f"text_encoder is {self.cfg.text_encoder!r}: no learned encoder")
        ids, mask = mx.array(ids), mx.array(mask).astype(mx.bool_)
        return self.text_encoder(ids, mask), mask

    def context(self, states: mx.array, mask: mx.array) -> Context:
        """Project caption states and precompute every block's cross-attention keys/values.

        A row whose mask has no True entry (empty or dropped caption) attends to the learned
        null state only.
        """
        states, mask = mx.array(states), mx.array(mask).astype(mx.bool_)
        B, L, _ = states.shape
        ctx = self.text_proj(states)  # (B, L, dim)
        first = (mx.arange(L) == 0)[None, :]  # (1, L)
        null_row = first & ~mx.any(mask, axis=1, keepdims=True)  # (B, L)
        ctx = mx.where(null_row[..., None], self.null_context, ctx)
        mask = mask | null_row
        kv = [block.cross_attn.context_kv(ctx) for block in self.blocks]
        pooled = None
        if "pooled_mlp" in self:
            weights = mask.astype(ctx.dtype)[..., None]  # (B, L, 1)
            mean = (ctx * weights).sum(axis=1, keepdims=True) / weights.sum(axis=1, keepdims=True)
            pooled = self.pooled_mlp(mean)  # (B, 1, dim)
        return Context(kv, mask_bias(mask), pooled)

    @property
    def digits(self) -> bool:
        """True where grid codes are written digit by digit (cfg.head "digits")."""
        return "digit_head" in self

    def input_table(self) -> mx.array:
        """(codebook_size + 1, dim): each input token's embedding (BOS last). With the digits
        head a grid code's row adds its digits' embeddings."""
        table = self.token_embedding.weight
        if not self.digits:
            return table
        codes = self.digit_head.codebook_size
        extra = mx.zeros((table.shape[0] - codes, table.shape[1]), dtype=table.dtype)
        return table + mx.concatenate([self.digit_head.input_table(), extra])

    def hidden(self, tokens: mx.array, ctx: Context, cache=None, offset=0) -> mx.array:
        """The final normalised states (B, T, dim) for input tokens (B, T) at positions
        offset..offset+T-1, what the output heads read.

        `offset` is an int, or an int32 array of shape (1,) with a StaticKVCache.
        """
        B, T = tokens.shape
        if isinstance(offset, int):
            pos = self.pos_embedding[offset : offset + T]
        else:
            pos = mx.take(self.pos_embedding, mx.arange(T) + offset, axis=0)
        if self.digits:
            x = mx.take(self.input_table(), tokens, axis=0) + pos
        else:
            x = self.token_embedding(tokens) + pos
        if ctx.pooled is not None:
            x = x + ctx.pooled
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            x = block(x, ctx.kv[i], ctx.bias, offset, None if cache is None else cache[i])
        return self.norm(x)

    def decode(self, tokens: mx.array, ctx: Context, cache=None, offset=0) -> mx.array:
        """Logits (B, T, codebook_size) for input tokens (B, T) at positions offset..offset+T-1
        (a "full" head; a digits head has no such logits: see `hidden`, `nll`).

        `offset` is an int, or an int32 array of shape (1,) with a StaticKVCache.
        """
        if self.digits:
            raise ValueError("a digits head writes codes digit by digit: it has no full logits")
        logits = self.head(self.hidden(tokens, ctx, cache, offset))
        if self._token_bias is None:
            return logits
        T = tokens.shape[1]
        if isinstance(offset, int):
            rows = self._segment_of[offset : offset + T]
        else:
            rows = mx.take(self._segment_of, mx.arange(T) + offset, axis=0)
        return logits + mx.take(self._token_bias, rows, axis=0)

    def token_bias_at(self, t: int) -> np.ndarray | None:
        """Position t's additive logit bias (V,) float32 (0 or MASKED), or None: no
        restriction (what `decode` adds, for engines that compute logits themselves)."""
        if self._token_bias is None:
            return None
        return np.array(self._token_bias[int(self._segment_of[t].item())])

    def token_ranges(self) -> np.ndarray:
        """Each position's allowed tokens low..high-1 as (seq_len, 2) [low, high): its
        segment's, or the whole vocabulary (where `token_bias_at` adds nothing)."""
        return self._token_ranges

    def inputs_for(self, codes: mx.array) -> mx.array:
        """Teacher-forcing inputs: BOS then codes[:, :-1]."""
        B = codes.shape[0]
        bos = mx.full((B, 1), self.bos_id, dtype=codes.dtype)
        return mx.concatenate([bos, codes[:, :-1]], axis=1)

    def __call__(self, codes: mx.array, states: mx.array, mask: mx.array) -> mx.array:
        """Training / reference forward: logits (B, S, codebook_size) predicting codes (B, S)."""
        return self.decode(self.inputs_for(codes), self.context(states, mask))

    def nll(self, codes: mx.array, states: mx.array, mask: mx.array) -> mx.array:
        """-log p of each code given the codes before it and the caption: (B, S) from codes
        (B, S); what training minimises, with either head."""
        if not self.digits:
            return nn.losses.cross_entropy(self(codes, states, mask), codes, reduction="none")
        h = self.hidden(self.inputs_for(codes), self.context(states, mask))
        g = self.grid_start
        rest = nn.losses.cross_entropy(
            self.head(h[:, :g]), codes[:, :g] - self.rest_low, reduction="none"
        )
        return mx.concatenate([rest, self.digit_head.nll(h[:, g:], codes[:, g:])], axis=1)

    def make_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]


def token_bias(segments, seq_len: int, vocab: int) -> tuple[mx.array | None, mx.array | None]:
    """Logit biases (len(segments) + 1, vocab) float32, 0 where a segment's positions may
    take a token and MASKED elsewhere (the last row, for positions in no segment, all 0),
    and each position's row (seq_len,) int32; (None, None) without segments."""
    if not segments:
        return None, None
    bias = np.zeros((len(segments) + 1, vocab), np.float32)
    row = np.full(seq_len, len(segments), np.int32)
    for i, (start, stop, low, high) in enumerate(segments):
        bias[i] = MASKED
        bias[i, low:high] = 0.0
        row[start:stop] = i
    return mx.array(bias), mx.array(row)


def digit_layout(segments, seq_len: int, digits) -> tuple[int, int]:
    """(grid_start, rest_low) for a digits head: the grid segment (tokens 0..prod(digits)-1)
    must end the sequence, and every position before it take tokens prod(digits).. only."""
    if not digits or not segments:
        raise ValueError("a digits head needs a layout with FSQ digits and segments")
    codes = int(np.prod(digits))
    grid = [s for s in segments if s[2:] == (0, codes)]
    if len(grid) != 1 or grid[0][1] != seq_len:
        raise ValueError("a digits head needs one grid segment of the FSQ codes, last")
    start = grid[0][0]
    for s in segments:
        if s is not grid[0] and (s[2] < codes or s[1] > start):
            raise ValueError(f"segment {s}: before the grid, tokens from {codes} on")
    return start, codes


def build_transformer(cfg: Config) -> ImageTransformer:
    """An ImageTransformer shaped by a model's config: the image tokenizer's vocabulary and
    sequence (`Config.token_layout`), and the conditioning width of its text encoder."""
    text_dim = None
    if cfg.transformer.text_encoder == "minilm":
        from pixelscene.transformer.minilm import MINILM_DIM

        text_dim = MINILM_DIM
    layout = cfg.token_layout()
    return ImageTransformer(
        cfg.transformer, layout.vocab, layout.length, text_dim, layout.segments, layout.digits
    )
