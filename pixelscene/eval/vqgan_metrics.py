"""Reconstruction metrics for an image tokenizer (the VQGAN or another) on whole 320x200 images.

PSNR is measured on uint8 pixels (what a user sees), per image, then averaged. Trivial
references put it in context: every 16x16, 8x8 or 4x4 patch replaced by its mean colour
(`psnr_patchK`), or painted in its most frequent colour (`pixel_accuracy_modeK`, the crisp
reference for exact-pixel accuracy). A 13x20 code grid is worth its bits when it beats the
16x16 references clearly.

Pixel art is judged pixel by pixel: `pixel_accuracy` is the fraction of pixels whose colour
comes back exactly (all three channels), `distinct_colours` the mean number of colours in a
reconstruction, and `off_grid_pixels` counts reconstructed pixels with a channel that no
6-bit VGA DAC level gives (`pixelscene.data.vga.DAC_LEVELS`), which the renderer never paints.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from pixelscene.data.vga import DAC_LEVELS
from pixelscene.vqgan.quantizer import usage_stats

PATCHES = (16, 8, 4)
_ON_GRID = np.zeros(256, bool)
_ON_GRID[DAC_LEVELS] = True


def psnr(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 (B, H, W, C) images (capped at 100 for identical ones)."""
    diff = reference.astype(np.float64) - test.astype(np.float64)
    mse = (diff**2).reshape(len(diff), -1).mean(axis=1)
    return _db(mse)


def _db(mse: np.ndarray) -> np.ndarray:
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


def pack_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> int32 (...) colour keys 0xRRGGBB."""
    x = images.astype(np.int32)
    return (x[..., 0] << 16) | (x[..., 1] << 8) | x[..., 2]


def unpack_rgb(keys: np.ndarray) -> np.ndarray:
    """int (...) colour keys 0xRRGGBB -> uint8 (..., 3)."""
    return np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=-1).astype(np.uint8)


def patch_mode(images: np.ndarray, k: int) -> np.ndarray:
    """Paint every k x k patch (partial ones at the edges too) in its most frequent colour;
    a tie goes to the smallest 0xRRGGBB value."""
    B, H, W, C = images.shape
    nh, nw = -(-H // k), -(-W // k)
    keys = np.full((B, nh * k, nw * k), -1, np.int32)  # -1 pads edge patches: never a colour
    keys[:, :H, :W] = pack_rgb(images)
    patches = keys.reshape(B, nh, k, nw, k).transpose(0, 1, 3, 2, 4).reshape(B, nh, nw, k * k)
    s = np.sort(patches, axis=-1)
    # In each sorted patch a colour is one run; the length of a run at its position i is
    # i - (where the run started) + 1, and the longest run's colour is the mode.
    pos = np.arange(k * k)
    starts = np.ones(s.shape, bool)
    starts[..., 1:] = s[..., 1:] != s[..., :-1]
    run_start = np.maximum.accumulate(np.where(starts, pos, 0), axis=-1)
    run_len = np.where(s >= 0, pos - run_start + 1, 0)
    mode = np.take_along_axis(s, run_len.argmax(axis=-1)[..., None], axis=-1)[..., 0]
    full = np.repeat(np.repeat(mode, k, axis=1), k, axis=2)[:, :H, :W]  # (B, H, W)
    return unpack_rgb(full)


def exact_pixels(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """(B, H, W) bool: pixels whose colour is the same in all channels."""
    return (reference == test).all(axis=-1)


def pixel_accuracy(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-image fraction of pixels whose colour is reproduced exactly."""
    return exact_pixels(reference, test).reshape(len(reference), -1).mean(axis=1)


def distinct_colours(images: np.ndarray) -> np.ndarray:
    """Per-image number of distinct colours of uint8 (B, H, W, 3) images."""
    s = np.sort(pack_rgb(images).reshape(len(images), -1), axis=1)
    return 1 + (s[:, 1:] != s[:, :-1]).sum(axis=1)


def off_grid_pixels(images: np.ndarray) -> int:
    """Pixels with any channel that is not one of the VGA DAC's 64 levels."""
    return int((~_ON_GRID[images]).any(axis=-1).sum())


def masked_psnr(reference: np.ndarray, test: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """PSNR in dB over each image's masked pixels (all channels), for images with any."""
    diff = reference.astype(np.float64) - test.astype(np.float64)
    sse = ((diff**2).sum(axis=-1) * masks).reshape(len(diff), -1).sum(axis=1)
    n = masks.reshape(len(diff), -1).sum(axis=1) * diff.shape[-1]
    return _db(sse[n > 0] / n[n > 0])


class ReconstructionMeter:
    """Accumulates PSNR, pixel accuracy, patch references, colour counts and code counts."""

    def __init__(self, codebook_size: int):
        self.counts = np.zeros(codebook_size, dtype=np.int64)
        self.per_image: dict[str, list[np.ndarray]] = {
            key: []
            for key in (
                "psnr",
                *(f"psnr_patch{k}" for k in PATCHES),
                "pixel_accuracy",
                *(f"pixel_accuracy_mode{k}" for k in PATCHES),
                "distinct_colours",
            )
        }
        self.off_grid = 0
        self.all_masked = True  # every image so far came with a sprite mask
        self.sprite_pixels = 0
        self.sprite_exact = 0
        self.sprite_psnr: list[np.ndarray] = []

    def add(
        self,
        original: np.ndarray,
        recon: np.ndarray,
        codes: np.ndarray,
        sprites: np.ndarray | None = None,
    ) -> None:
        """original, recon: uint8 (B, H, W, 3); codes: int, any shape; sprites: (B, H, W) bool."""
        add = self.per_image
        add["psnr"].append(psnr(original, recon))
        add["pixel_accuracy"].append(pixel_accuracy(original, recon))
        for k in PATCHES:
            add[f"psnr_patch{k}"].append(psnr(original, patch_mean(original, k)))
            add[f"pixel_accuracy_mode{k}"].append(pixel_accuracy(original, patch_mode(original, k)))
        add["distinct_colours"].append(distinct_colours(recon))
        self.off_grid += off_grid_pixels(recon)
        # tokens past the codebook (a palette's, `pixelscene.imagetok`) are not codes
        flat = np.asarray(codes).reshape(-1)
        flat = flat[flat < len(self.counts)]
        self.counts += np.bincount(flat, minlength=len(self.counts))
        if sprites is None:
            self.all_masked = False
            return
        self.sprite_pixels += int(sprites.sum())
        self.sprite_exact += int((exact_pixels(original, recon) & sprites).sum())
        self.sprite_psnr.append(masked_psnr(original, recon, sprites))

    def result(self) -> dict[str, Any]:
        usage, perplexity = usage_stats(self.counts)
        images = int(sum(len(p) for p in self.per_image["psnr"]))
        means = {
            key: float(np.concatenate(xs).mean()) if images else float("nan")
            for key, xs in self.per_image.items()
        }
        colours = means.pop("distinct_colours")
        sprites = self.all_masked and self.sprite_pixels > 0
        return {
            **means,
            "pixel_accuracy_sprites": self.sprite_exact / self.sprite_pixels if sprites else None,
            "psnr_sprites": float(np.concatenate(self.sprite_psnr).mean()) if sprites else None,
            "distinct_colours": colours,
            "off_grid_pixels": self.off_grid,
            "codebook_usage": usage,
            "perplexity": perplexity,
            "images": images,
        }


def evaluate_vqgan(model, images: Iterable, batch_size: int = 8) -> dict[str, Any]:
    """Measure an image tokenizer on an iterable of uint8 (200, 320, 3) images.

    Args:
        model: any image tokenizer (`pixelscene.image_tokenizers.ImageTokenizer`):
            `encode(images)` of float32 (B, 200, 320, 3) in [-1, 1] gives int codes (B, h, w)
            or (B, h, w, k), `decode(codes)` gives images in [-1, 1], and `codebook_size`.
        images: uint8 images, or (image, sprite mask) pairs where a mask is a (200, 320) bool
            array of the pixels that sprites cover, or None where it is not known.
        batch_size: images per encode/decode call.

    Returns:
        psnr, psnr_patch16/8/4 (dB); pixel_accuracy and pixel_accuracy_mode16/8/4 (0..1, the
        mean over images of each image's exact-pixel fraction); pixel_accuracy_sprites (pooled:
        exact sprite pixels over all sprite pixels) and psnr_sprites (per image, the MSE over
        its sprite pixels, then the mean of those PSNRs; images without sprite pixels are left
        out), both None unless every image came with a mask and some pixel is a sprite's;
        distinct_colours (mean per reconstruction), off_grid_pixels (total), codebook_usage
        (0..1), perplexity, images.
    """
    import mlx.core as mx

    from pixelscene.data.datasets import to_float, to_uint8

    meter = ReconstructionMeter(model.codebook_size)
    batch: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []

    def flush() -> None:
        original = np.stack(batch)
        codes = model.encode(mx.array(to_float(original)))
        recon = model.decode(codes)
        mx.eval(codes, recon)
        sprites = None if any(m is None for m in masks) else np.stack(masks)
        meter.add(original, to_uint8(np.array(recon)), np.array(codes), sprites)
        batch.clear()
        masks.clear()

    for item in images:
        image, mask = item if isinstance(item, tuple) else (item, None)
        batch.append(image)
        masks.append(mask)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return meter.result()
