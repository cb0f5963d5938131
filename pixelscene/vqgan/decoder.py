"""VQGAN decoder: (B, h, w, codebook_dim) codes -> (B, 16h, 16w, 3) images (unclipped)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from pixelscene.config import VQGANConfig

from .encoder import first_level, level_channels
from .layers import ResidualBlock, Upsample, depth_to_space, silu


class Decoder(nn.Module):
    """conv_in, a middle block, then per level (deepest first): a 2x Upsample and residual
    blocks; the mirror of the Encoder, ending in depth-to-space when patch_size > 1."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch = level_channels(cfg)
        first = first_level(cfg)
        self.patch_size = cfg.patch_size
        self.conv_in = nn.Conv2d(cfg.codebook_dim, ch[-1], kernel_size=3, padding=1)
        self.mid = ResidualBlock(ch[-1])
        blocks: list[nn.Module] = []
        c_prev = ch[-1]
        for i in reversed(range(first, len(ch))):
            blocks.append(Upsample(c_prev, ch[i]))
            blocks.extend(ResidualBlock(ch[i]) for _ in range(cfg.num_res_blocks))
            c_prev = ch[i]
        self.blocks = blocks
        self.norm_out = nn.LayerNorm(ch[first])
        out_ch = cfg.in_channels * cfg.patch_size**2
        self.conv_out = nn.Conv2d(ch[first], out_ch, kernel_size=3, padding=1)

    def features(self, z: mx.array) -> mx.array:
        """Everything before the last convolution: (B, H/p, W/p, channels)."""
        x = self.mid(self.conv_in(z))
        for block in self.blocks:
            x = block(x)
        return silu(self.norm_out(x))

    def head(self, h: mx.array) -> mx.array:
        """The last convolution (and depth-to-space): features -> (B, H, W, 3)."""
        x = self.conv_out(h)
        return depth_to_space(x, self.patch_size) if self.patch_size > 1 else x

    def __call__(self, z: mx.array) -> mx.array:
        return self.head(self.features(z))
