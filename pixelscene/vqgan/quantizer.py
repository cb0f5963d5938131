"""Vector quantizer with l2-normalised low-dimensional codes and cosine lookup.

Codes and encoder outputs live on the unit sphere of a small space (codebook_dim, e.g. 16),
which keeps distances meaningful and the codebook from collapsing onto a few entries
(as in ViT-VQGAN). The trainer initialises the codebook from encoder outputs and
restarts codes unused over a window (`restart_codes`), so all entries stay in play.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np


def l2_normalize(x: mx.array, eps: float = 1e-6) -> mx.array:
    return x * mx.rsqrt(mx.sum(x * x, axis=-1, keepdims=True) + eps)


class VectorQuantizer(nn.Module):
    """Maps (B, H, W, D) latents to the nearest of `codebook_size` unit-norm codes."""

    def __init__(
        self, codebook_size: int = 512, codebook_dim: int = 16, commitment_cost: float = 0.25
    ):
        super().__init__()
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.commitment_cost = commitment_cost
        self.codebook = mx.random.normal((codebook_size, codebook_dim))

    def codes(self) -> mx.array:
        """The normalised codebook, (K, D)."""
        return l2_normalize(self.codebook)

    def lookup(self, z: mx.array) -> mx.array:
        """Indices (B, H, W) int32 of the most similar code for each latent vector."""
        B, H, W, D = z.shape
        sim = l2_normalize(z).reshape(-1, D) @ self.codes().T  # (B*H*W, K)
        indices = mx.argmax(sim, axis=-1).astype(mx.int32).reshape(B, H, W)
        return mx.stop_gradient(indices)

    def __call__(self, z: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Quantize z.

        Returns:
            z_q: (B, H, W, D) quantized latents with straight-through gradients to z.
            indices: (B, H, W) int32.
            loss: codebook loss + commitment_cost * commitment loss (scalar).
        """
        z_n = l2_normalize(z)
        indices = self.lookup(z)
        e = self.codes()[indices]  # (B, H, W, D)
        codebook_loss = mx.mean(mx.sum((mx.stop_gradient(z_n) - e) ** 2, axis=-1))
        commitment = mx.mean(mx.sum((z_n - mx.stop_gradient(e)) ** 2, axis=-1))
        z_q = z_n + mx.stop_gradient(e - z_n)
        return z_q, indices, codebook_loss + self.commitment_cost * commitment

    def decode(self, indices: mx.array) -> mx.array:
        """(B, H, W) indices -> (B, H, W, D) code vectors."""
        return self.codes()[indices]

    def restart_codes(
        self, dead: np.ndarray, candidates: np.ndarray, rng: np.random.Generator
    ) -> int:
        """Replace the codes flagged in `dead` (bool, K) with random rows of `candidates` (N, D).

        Candidates are recent encoder outputs, so a revived code lands where data is.
        Returns how many codes were replaced.
        """
        idx = np.flatnonzero(dead)
        if idx.size == 0 or len(candidates) == 0:
            return 0
        pick = rng.choice(len(candidates), size=idx.size, replace=idx.size > len(candidates))
        new = candidates[pick] + rng.normal(scale=0.01, size=(idx.size, candidates.shape[1]))
        new /= np.linalg.norm(new, axis=1, keepdims=True) + 1e-6
        book = np.array(self.codebook)
        book[idx] = new.astype(book.dtype)
        self.codebook = mx.array(book)
        return int(idx.size)


def usage_stats(counts: np.ndarray) -> tuple[float, float]:
    """(fraction of codes used, perplexity) from per-code counts."""
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    p = counts[counts > 0] / total
    return float((counts > 0).mean()), float(np.exp(-(p * np.log(p)).sum()))
