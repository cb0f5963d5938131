"""Reconstruction metrics for the VQGAN on whole 320x200 images.

PSNR is measured on uint8 pixels (what a user sees), per image, then averaged. Two trivial
references put it in context: every 16x16 (resp. 4x4) patch replaced by its mean colour.
A 13x20 code grid is worth its bits when it beats the 16x16 patch means clearly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pixelscene.vqgan.quantizer import usage_stats


def psnr(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 (B, H, W, C) images (capped at 100 for identical ones)."""
    diff = reference.astype(np.float64) - test.astype(np.float64)
    mse = (diff**2).reshape(len(diff), -1).mean(axis=1)
    return np.where(mse > 0, 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)), 100.0)


def patch_mean(images: np.ndarray, k: int) -> np.ndarray:
    """Replace every k x k patch (partial ones at the edges too) by its mean colour, rounded."""
    B, H, W, C = images.shape
    ph, pw = -(-H // k) * k, -(-W // k) * k
    x = images.astype(np.float64)
    # Edge patches average only their real pixels: sum with zero padding, divide by counts.
    padded = np.zeros((B, ph, pw, C))
    padded[:, :H, :W] = x
    counts = np.zeros((ph, pw))
    counts[:H, :W] = 1
    sums = padded.reshape(B, ph // k, k, pw // k, k, C).sum(axis=(2, 4))
    n = counts.reshape(ph // k, k, pw // k, k).sum(axis=(1, 3))[None, :, :, None]
    means = np.repeat(np.repeat(sums / n, k, axis=1), k, axis=2)[:, :H, :W]
    return np.clip(np.rint(means), 0, 255).astype(np.uint8)


class ReconstructionMeter:
    """Accumulates PSNR, patch-mean references and code counts over batches."""

    def __init__(self, codebook_size: int):
        self.counts = np.zeros(codebook_size, dtype=np.int64)
        self.psnr: list[np.ndarray] = []
        self.patch16: list[np.ndarray] = []
        self.patch4: list[np.ndarray] = []

    def add(self, original: np.ndarray, recon: np.ndarray, codes: np.ndarray) -> None:
        """original, recon: uint8 (B, H, W, 3); codes: (B, h, w) ints."""
        self.psnr.append(psnr(original, recon))
        self.patch16.append(psnr(original, patch_mean(original, 16)))
        self.patch4.append(psnr(original, patch_mean(original, 4)))
        self.counts += np.bincount(codes.reshape(-1), minlength=len(self.counts))

    def result(self) -> dict[str, Any]:
        usage, perplexity = usage_stats(self.counts)
        images = int(sum(len(p) for p in self.psnr))
        mean = (
            (lambda xs: float(np.concatenate(xs).mean())) if images else (lambda xs: float("nan"))
        )
        return {
            "psnr": mean(self.psnr),
            "psnr_patch16": mean(self.patch16),
            "psnr_patch4": mean(self.patch4),
            "codebook_usage": usage,
            "perplexity": perplexity,
            "images": images,
        }


def evaluate_vqgan(model, images, batch_size: int = 8) -> dict[str, Any]:
    """Measure a VQGAN on an iterable of uint8 (200, 320, 3) images.

    Returns psnr, psnr_patch16, psnr_patch4 (dB), codebook_usage (0..1), perplexity, images.
    """
    import mlx.core as mx

    from pixelscene.data.datasets import to_float, to_uint8

    meter = ReconstructionMeter(model.cfg.codebook_size)
    batch: list[np.ndarray] = []

    def flush() -> None:
        original = np.stack(batch)
        codes = model.encode(mx.array(to_float(original)))
        recon = model.decode(codes)
        mx.eval(codes, recon)
        meter.add(original, to_uint8(np.array(recon)), np.array(codes))
        batch.clear()

    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return meter.result()
