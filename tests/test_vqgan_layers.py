"""VQGAN building blocks, channels-last: the plan's shape tests rewritten for NHWC, plus more."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from pixelscene.testing import micro_vqgan_config
from pixelscene.vqgan import (
    Decoder,
    Downsample,
    Encoder,
    PatchDiscriminator,
    ResidualBlock,
    Upsample,
    depth_to_space,
    space_to_depth,
)


def test_residual_block_preserves_shape():
    block = ResidualBlock(channels=64)
    x = mx.random.normal((2, 32, 32, 64))
    assert block(x).shape == x.shape


@pytest.mark.parametrize("channels", [8, 32, 64])
def test_residual_block_different_channels(channels):
    block = ResidualBlock(channels)
    x = mx.random.normal((1, 16, 16, channels))
    assert block(x).shape == x.shape


def test_residual_block_changes_width_through_skip():
    block = ResidualBlock(16, 32)
    assert block(mx.random.normal((1, 8, 8, 16))).shape == (1, 8, 8, 32)


def test_downsample_halves_spatial():
    down = Downsample(in_channels=64, out_channels=128)
    assert down(mx.random.normal((2, 32, 32, 64))).shape == (2, 16, 16, 128)


def test_upsample_doubles_spatial():
    up = Upsample(in_channels=128, out_channels=64)
    assert up(mx.random.normal((2, 16, 16, 128))).shape == (2, 32, 32, 64)


@pytest.mark.parametrize("r", [2, 4])
def test_space_to_depth_is_lossless_and_local(r):
    x = mx.random.normal((2, 8, 12, 3))
    y = space_to_depth(x, r)
    assert y.shape == (2, 8 // r, 12 // r, 3 * r * r)
    np.testing.assert_array_equal(np.array(depth_to_space(y, r)), np.array(x))
    # output pixel (0, 1) holds exactly the input block rows 0..r-1, columns r..2r-1
    block = np.array(x)[0, :r, r : 2 * r].reshape(-1)
    np.testing.assert_array_equal(np.sort(np.array(y)[0, 0, 1]), np.sort(block))


@pytest.mark.parametrize("patch_size", [1, 4])
def test_encoder_downsamples_16x(patch_size):
    cfg = micro_vqgan_config(
        channel_multipliers=[1, 2, 2, 4], codebook_dim=16, patch_size=patch_size
    )
    z = Encoder(cfg)(mx.random.normal((2, 208, 320, 3)))
    assert z.shape == (2, 13, 20, 16) and z.dtype == mx.float32


@pytest.mark.parametrize("patch_size", [1, 4])
def test_decoder_upsamples_16x(patch_size):
    cfg = micro_vqgan_config(
        channel_multipliers=[1, 2, 2, 4], codebook_dim=16, patch_size=patch_size
    )
    x = Decoder(cfg)(mx.random.normal((2, 13, 20, 16)))
    assert x.shape == (2, 208, 320, 3) and x.dtype == mx.float32


def test_discriminator_outputs_patch_logits():
    disc = PatchDiscriminator(in_channels=3, hidden_channels=8, num_layers=3)
    logits = disc(mx.random.normal((2, 64, 96, 3)))
    assert logits.shape == (2, 8, 12, 1)


def test_discriminator_has_trainable_parameters_and_gradients():
    disc = PatchDiscriminator(in_channels=3, hidden_channels=8, num_layers=2)
    x = mx.random.normal((1, 32, 32, 3))
    grad = mx.grad(lambda x: mx.sum(disc(x)))(x)
    assert disc.trainable_parameters() and float(mx.abs(grad).sum()) > 0


def test_silu_from_products_matches_silu_and_its_gradient():
    from pixelscene.vqgan.layers import silu

    x64 = np.concatenate([np.linspace(-120, 120, 20_001), [-1e-6, 0.0, 1e-6]])
    x = mx.array(x64.astype(np.float32))
    x64 = np.array(x).astype(np.float64)
    exact = x64 / (1 + np.exp(-x64))
    y = np.array(silu(x)).astype(np.float64)
    assert np.all(np.abs(y - exact) <= 2e-6 * np.abs(exact) + 1e-30)
    s = 1 / (1 + np.exp(-x64))
    grad = np.array(mx.grad(lambda v: silu(v).sum())(x)).astype(np.float64)
    assert np.allclose(grad, s * (1 + x64 * (1 - s)), rtol=1e-5, atol=1e-6)
    compiled = mx.compile(mx.grad(lambda v: (silu(v) * v).sum()))  # as in a train step
    assert np.allclose(
        np.array(compiled(x[:50])),
        np.array(mx.grad(lambda v: (nn.silu(v) * v).sum())(x[:50])),
        rtol=1e-5,
        atol=1e-6,
    )
