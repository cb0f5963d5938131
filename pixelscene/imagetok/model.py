"""The categorical image tokenizer: patches of the padded image -> FSQ codes -> a painter
that chooses each pixel's colour.

Encoder: space-to-depth by `patch_size` (an 8x8 patch becomes one 192-value vector), a
linear layer, residual 3x3 blocks over the patch grid, FSQ. Decoder: the codes' grid
values, residual 3x3 blocks over the grid (each block widens the context the painter
sees, which is where a scene's exact palette comes from), a linear layer that gives every
pixel of the patch `pixel_features` features (depth-to-space), and a per-pixel linear
head with `color_levels` logits per channel. Painting takes the most likely level of each
channel, so every pixel is a 6-bit DAC colour and edges stay hard: there is no average
of two colours for it to paint. Trained with cross-entropy (`pixelscene.train.imagetok`).

On a CPU everything but the element-wise work is a matrix product: the 3x3 blocks run
at the grid's resolution (26x40 for 8x8 patches), never at the pixels'.
"""

from __future__ import annotations

import os

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from pixelscene.config import TokenizerConfig
from pixelscene.data.vga import DAC_LEVELS
from pixelscene.imagetok.fsq import FSQ
from pixelscene.imagetok.heads import MixtureHead, PaletteHead, SoftmaxHead
from pixelscene.imagetok.palette import EMPTY, batch_palettes, levels_of
from pixelscene.vqgan.layers import ResidualBlock, depth_to_space, silu, space_to_depth
from pixelscene.vqgan.model import PaddedFrame

_DAC_FLOAT = mx.array(DAC_LEVELS.astype(np.float32) * (2.0 / 255.0) - 1.0)


def color_levels(images: mx.array, levels: int = 64) -> mx.array:
    """float images in [-1, 1] -> int32 level of each channel (the nearest of `levels`)."""
    v = (images + 1.0) * 127.5
    return mx.clip(mx.round(v * (levels - 1) / 255.0), 0, levels - 1).astype(mx.int32)


class TokenEncoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        p = cfg.patch_size
        self.patch_size = p
        # with a palette, each pixel also brings its palette index (scaled to [-1, 1])
        self.proj_in = nn.Linear((4 if cfg.palette_size else 3) * p * p, cfg.dim)
        self.blocks = [ResidualBlock(cfg.dim) for _ in range(cfg.encoder_blocks)]
        self.norm_out = nn.LayerNorm(cfg.dim)
        self.proj_out = nn.Linear(cfg.dim, cfg.codes_per_position * len(cfg.fsq_levels))

    def __call__(self, x: mx.array) -> mx.array:
        h = self.proj_in(space_to_depth(x, self.patch_size))  # (B, h, w, D)
        for block in self.blocks:
            h = block(h)
        return self.proj_out(silu(self.norm_out(h)))  # (B, h, w, k*d)


class TokenDecoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        p, f = cfg.patch_size, cfg.pixel_features
        self.patch_size = p
        self.color_levels = cfg.color_levels
        self.proj_in = nn.Linear(cfg.codes_per_position * len(cfg.fsq_levels), cfg.dim)
        self.blocks = [ResidualBlock(cfg.dim) for _ in range(cfg.decoder_blocks)]
        self.norm_out = nn.LayerNorm(cfg.dim)
        self.to_pixels = nn.Linear(cfg.dim, p * p * f)
        self.pixel_norm = nn.LayerNorm(f)
        if cfg.palette_size:
            # the grid hears the palette too: a mean of its entries' embeddings
            self.palette_in = nn.Linear(3, cfg.dim)
            self.palette_out = nn.Linear(cfg.dim, cfg.dim)
            self.head = PaletteHead(f, cfg.palette_size)
        elif cfg.head == "mixture":
            self.head = MixtureHead(f, cfg.color_levels, cfg.mixture_components)
        else:
            self.head = SoftmaxHead(f, cfg.color_levels)

    def features(self, z: mx.array, palette: mx.array | None = None) -> mx.array:
        """(B, h, w, k*d) grid values (and (B, P, 3) palettes) -> (B, h*p, w*p, F)."""
        h = self.proj_in(z)
        if palette is not None:
            valid = (palette[..., :1] >= 0).astype(mx.float32)  # (B, P, 1)
            e = nn.silu(self.palette_in(palette.astype(mx.float32) * (2.0 / 63.0) - 1.0))
            summary = (e * valid).sum(axis=1) / mx.maximum(valid.sum(axis=1), 1.0)
            h = h + self.palette_out(summary)[:, None, None, :]
        for block in self.blocks:
            h = block(h)
        h = self.to_pixels(silu(self.norm_out(h)))
        return silu(self.pixel_norm(depth_to_space(h, self.patch_size)))

    def __call__(self, z: mx.array, palette: mx.array | None = None) -> mx.array:
        """Grid values -> the colour head's parameters (or palette logits) for every pixel."""
        if palette is not None:
            return self.head(self.features(z, palette), palette)
        return self.head(self.features(z))


class ImageTokenizer(PaddedFrame, nn.Module):
    """320x200 images <-> codes: an (h, w) grid of FSQ codes ((h, w, k) with several per
    position); with a palette (`palette_size` > 0) a flat token row per image instead:
    3 tokens per palette entry (its levels, offset by `codebook_size`; EMPTY slots are
    `codebook_size + 64`), then the grid in raster order."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = TokenEncoder(cfg)
        self.decoder = TokenDecoder(cfg)
        self.fsq = FSQ(cfg.fsq_levels)

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    @property
    def vocab_size(self) -> int:
        """Distinct token values: the grid's codes, then 64 levels and EMPTY."""
        return self.codebook_size + (self.cfg.color_levels + 1 if self.cfg.palette_size else 0)

    def encoder_input(self, x: mx.array, index: mx.array | None) -> mx.array:
        """Float pixels (B, H, W, 3), with the palette index of each pixel when there is one."""
        if not self.cfg.palette_size:
            return x
        scale = 2.0 / max(1, self.cfg.palette_size - 1)
        return mx.concatenate([x, index[..., None].astype(mx.float32) * scale - 1.0], axis=-1)

    def quantize(self, x: mx.array, index: mx.array | None = None) -> mx.array:
        """Padded images or crops -> straight-through grid values (B, h, w, k*d)."""
        z = self.encoder(self.encoder_input(x, index))
        B, h, w, _ = z.shape
        k = self.cfg.codes_per_position
        q = self.fsq.quantize(z.reshape(B, h, w, k, self.fsq.dim))
        return q.reshape(B, h, w, k * self.fsq.dim)

    def __call__(self, x: mx.array, palette=None, index=None) -> mx.array:
        """Padded images or crops -> the colour head's parameters for every pixel."""
        return self.decoder(self.quantize(x, index), palette)

    def palettes(self, images: mx.array) -> tuple[mx.array, mx.array]:
        """float images -> (palettes (B, P, 3) int32, index (B, H, W) int32)."""
        uint8 = np.clip(np.rint((np.array(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        palette, index = batch_palettes(levels_of(uint8), self.cfg.palette_size)
        return mx.array(palette), mx.array(index.astype(np.int32))

    def encode(self, images: mx.array) -> mx.array:
        """float images (B, 200, 320, 3) in [-1, 1] -> int32 codes (B, h, w) or (B, h, w, k);
        with a palette, tokens (B, 3 * palette_size + h * w)."""
        palette = index = None
        if self.cfg.palette_size:
            palette, index = self.palettes(images)
            index = self.pad(index[..., None])[..., 0]
        z = self.encoder(self.encoder_input(self.pad(images), index))
        B, h, w, _ = z.shape
        k = self.cfg.codes_per_position
        codes = self.fsq.to_codes(self.fsq.quantize(z.reshape(B, h, w, k, self.fsq.dim)))
        codes = codes[..., 0] if k == 1 else codes
        if palette is None:
            return codes
        return self.join(palette, codes)

    def join(self, palette: mx.array, codes: mx.array) -> mx.array:
        """(B, P, 3) palette and (B, h, w) codes -> (B, 3P + h*w) tokens."""
        C, L = self.codebook_size, self.cfg.color_levels
        p = mx.where(palette >= 0, palette + C, C + L).reshape(palette.shape[0], -1)
        return mx.concatenate([p.astype(mx.int32), codes.reshape(codes.shape[0], -1)], axis=1)

    def split(self, tokens: mx.array) -> tuple[mx.array, mx.array]:
        """(B, 3P + h*w) tokens -> (palette (B, P, 3) with EMPTY slots, codes (B, h, w))."""
        C, L, P = self.codebook_size, self.cfg.color_levels, self.cfg.palette_size
        h, w = self.cfg.grid_size
        head = tokens[:, : 3 * P].reshape(-1, P, 3) - C
        # an entry is a colour only when all three of its tokens are levels
        whole = mx.all((head >= 0) & (head < L), axis=-1, keepdims=True)
        palette = mx.where(whole, head, EMPTY)
        codes = mx.clip(tokens[:, 3 * P :], 0, C - 1).reshape(-1, h, w)
        return palette.astype(mx.int32), codes

    def decode_levels(self, codes: mx.array) -> mx.array:
        """Codes (or tokens) -> int32 DAC levels (B, 200, 320, 3)."""
        palette = None
        if self.cfg.palette_size:
            palette, codes = self.split(codes)
        if codes.ndim == 3:
            codes = codes[..., None]
        B, h, w, k = codes.shape
        z = self.fsq.from_codes(codes).reshape(B, h, w, k * self.fsq.dim)
        features = self.crop(self.decoder.features(z, palette))
        head = self.decoder.head
        if palette is not None:
            return head.paint(head(features, palette), palette)
        return head.paint(head(features))

    def decode(self, codes: mx.array) -> mx.array:
        """Codes -> float images in [-1, 1] whose pixels are exact 6-bit DAC colours."""
        return _DAC_FLOAT[self.decode_levels(codes)]

    def reconstruct(self, images: mx.array) -> mx.array:
        return self.decode(self.encode(images))


def load_image_tokenizer(model_dir: str | os.PathLike | None = None) -> ImageTokenizer:
    """Build the tokenizer from MODEL_DIR/config.json and load tokenizer.safetensors strictly
    (weights stored as float16 are computed in float32)."""
    from pixelscene import model_io

    path = model_io.resolve_model_dir(model_dir)
    cfg = model_io.load_model_config(path)
    model = ImageTokenizer(cfg.tokenizer)
    model_io.load_weights(path / "tokenizer.safetensors", model)
    model.eval()
    return model
