"""VQGAN encoder: (B, H, W, 3) in [-1, 1] -> (B, H/16, W/16, codebook_dim) latents."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from pixelscene.config import VQGANConfig

from .layers import Downsample, ResidualBlock, silu, space_to_depth


def level_channels(cfg: VQGANConfig) -> list[int]:
    return [cfg.hidden_channels * m for m in cfg.channel_multipliers]


def first_level(cfg: VQGANConfig) -> int:
    """The first level with residual blocks: log2(patch_size)."""
    return int(math.log2(cfg.patch_size))


class Encoder(nn.Module):
    """conv_in, then per level: residual blocks and a 2x Downsample (every level: 16x for 4).

    With patch_size p > 1 the input is first reshaped losslessly to (H/p, W/p, 3*p*p) and
    conv_in works there, in place of the first log2(p) levels.
    """

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch = level_channels(cfg)
        first = first_level(cfg)
        self.patch_size = cfg.patch_size
        in_ch = cfg.in_channels * cfg.patch_size**2
        self.conv_in = nn.Conv2d(in_ch, ch[first], kernel_size=3, padding=1)
        blocks: list[nn.Module] = []
        for i in range(first, len(ch)):
            blocks.extend(ResidualBlock(ch[i]) for _ in range(cfg.num_res_blocks))
            blocks.append(Downsample(ch[i], ch[min(i + 1, len(ch) - 1)]))
        self.blocks = blocks
        self.mid = ResidualBlock(ch[-1])
        self.norm_out = nn.LayerNorm(ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], cfg.codebook_dim, kernel_size=1)

    def __call__(self, x: mx.array) -> mx.array:
        if self.patch_size > 1:
            x = space_to_depth(x, self.patch_size)
        x = self.conv_in(x)
        for block in self.blocks:
            x = block(x)
        x = self.mid(x)
        return self.conv_out(silu(self.norm_out(x)))  # (B, H/16, W/16, D)
