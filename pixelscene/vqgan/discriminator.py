"""PatchGAN discriminator: per-patch real/fake logits, built from space-to-depth steps."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .layers import space_to_depth


class PatchDiscriminator(nn.Module):
    """`num_layers` halvings (space-to-depth + 3x3 conv), then a 3x3 conv to one logit.

    Returns (B, H / 2**num_layers, W / 2**num_layers, 1) logits.
    """

    def __init__(self, in_channels: int = 3, hidden_channels: int = 64, num_layers: int = 3):
        super().__init__()
        convs, norms = [], []
        c_in, c = in_channels, hidden_channels
        for i in range(num_layers):
            convs.append(nn.Conv2d(4 * c_in, c, kernel_size=3, padding=1))
            norms.append(nn.LayerNorm(c) if i > 0 else nn.Identity())
            c_in, c = c, min(2 * c, 512)
        self.convs = convs
        self.norms = norms
        self.conv_out = nn.Conv2d(c_in, 1, kernel_size=3, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = nn.leaky_relu(norm(conv(space_to_depth(x))), negative_slope=0.2)
        return self.conv_out(x)
