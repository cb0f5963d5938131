"""Per-pixel colour heads: each turns a pixel's features into a distribution over the 64
DAC levels of each channel, a loss for the true levels, and the painted (most likely)
levels. Both paint only 6-bit DAC colours.

- `SoftmaxHead`: 64 independent logits per channel (cross-entropy).
- `MixtureHead`: a choice among K candidate colours per pixel, each a discretised
  logistic per channel (PixelCNN++'s likelihood, on 64 levels). The choice is joint over
  the three channels, as a palette index is, and the candidates' centres are ordinal, so
  it learns about as fast as a regression while painting no average of two colours:
  painting takes the most likely candidate and rounds its centre to a level.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class SoftmaxHead(nn.Module):
    def __init__(self, features: int, levels: int):
        super().__init__()
        self.levels = levels
        self.proj = nn.Linear(features, 3 * levels)

    def __call__(self, f: mx.array) -> mx.array:
        out = self.proj(f)
        return out.reshape(*out.shape[:-1], 3, self.levels)

    def nll(self, params: mx.array, target: mx.array) -> mx.array:
        """Mean negative log-likelihood per channel of int levels (..., 3)."""
        return nn.losses.cross_entropy(params, target).mean()

    def paint(self, params: mx.array) -> mx.array:
        return mx.argmax(params, axis=-1).astype(mx.int32)


class MixtureHead(nn.Module):
    def __init__(self, features: int, levels: int, components: int):
        super().__init__()
        self.levels = levels
        self.k = components
        self.proj = nn.Linear(features, components * 7)

    def __call__(self, f: mx.array) -> mx.array:
        """(..., F) -> (..., K, 7): a logit, 3 centres and 3 log-scales per candidate."""
        out = self.proj(f)
        return out.reshape(*out.shape[:-1], self.k, 7)

    def _split(self, params: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        half = (self.levels - 1) / 2
        logit = params[..., 0]
        centre = params[..., 1:4] * half + half  # in levels
        log_scale = mx.maximum(params[..., 4:7], -6.0)
        return logit, centre, log_scale

    def nll(self, params: mx.array, target: mx.array) -> mx.array:
        """Mean negative log-likelihood per channel of int levels (..., 3)."""
        logit, centre, log_scale = self._split(params)
        x = target[..., None, :].astype(mx.float32)  # (..., 1, 3)
        inv = mx.exp(-log_scale)
        plus = inv * (x + 0.5 - centre)
        minus = inv * (x - 0.5 - centre)
        log_cdf_plus = plus - nn.softplus(plus)  # log sigmoid(plus)
        log_one_minus_cdf_min = -nn.softplus(minus)
        mid = inv * (x - centre)
        log_pdf_mid = mid - log_scale - 2.0 * nn.softplus(mid)
        diff = mx.sigmoid(plus) - mx.sigmoid(minus)
        log_bin = mx.where(diff > 1e-5, mx.log(mx.maximum(diff, 1e-12)), log_pdf_mid)
        top = self.levels - 1
        log_p = mx.where(
            x < 0.5, log_cdf_plus, mx.where(x > top - 0.5, log_one_minus_cdf_min, log_bin)
        )
        joint = log_p.sum(axis=-1) + logit - mx.logsumexp(logit, axis=-1, keepdims=True)
        return -mx.logsumexp(joint, axis=-1).mean() / 3.0

    def paint(self, params: mx.array) -> mx.array:
        logit, centre, _ = self._split(params)
        best = mx.argmax(logit, axis=-1)[..., None, None]  # (..., 1, 1)
        chosen = mx.take_along_axis(centre, best, axis=-2)[..., 0, :]
        return mx.clip(mx.round(chosen), 0, self.levels - 1).astype(mx.int32)


class PaletteHead(nn.Module):
    """Each pixel chooses one entry of its image's palette: logits are the dot products of
    the pixel's features with an embedding of each entry's colour (empty slots masked)."""

    def __init__(self, features: int, size: int):
        super().__init__()
        self.embed_in = nn.Linear(3, features)
        self.embed_out = nn.Linear(features, features)
        # Each slot's own vector: entries are ordered by luminance, so a code can name
        # "entry k" outright instead of a colour that neighbouring shades could also match.
        self.slot = mx.zeros((size, features))

    def entries(self, palette: mx.array) -> tuple[mx.array, mx.array]:
        """(B, P, 3) int levels, -1 empty -> (embeddings (B, P, F), valid (B, P))."""
        valid = palette[..., 0] >= 0
        x = palette.astype(mx.float32) * (2.0 / 63.0) - 1.0
        return self.embed_out(nn.silu(self.embed_in(x))) + self.slot, valid

    def __call__(self, f: mx.array, palette: mx.array) -> mx.array:
        """(B, H, W, F) features, (B, P, 3) palette -> (B, H, W, P) logits."""
        g, valid = self.entries(palette)
        B, H, W, F = f.shape
        logits = (f.reshape(B, H * W, F) @ g.transpose(0, 2, 1)).reshape(B, H, W, -1)
        return mx.where(valid[:, None, None, :], logits, -1e9)

    def nll(self, logits: mx.array, target: mx.array) -> mx.array:
        return nn.losses.cross_entropy(logits, target).mean()

    def paint(self, logits: mx.array, palette: mx.array) -> mx.array:
        """-> int32 levels (B, H, W, 3) of the most likely entry."""
        best = mx.argmax(logits, axis=-1)  # (B, H, W)
        B, H, W = best.shape
        flat = mx.take_along_axis(palette, best.reshape(B, H * W, 1), axis=1)
        return mx.maximum(flat, 0).reshape(B, H, W, 3).astype(mx.int32)
