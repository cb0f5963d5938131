"""Vector quantizer: shapes, index range, cosine lookup, dead-code restarts, usage stats."""

import mlx.core as mx
import numpy as np
import pytest

from pixelscene.vqgan import VectorQuantizer, usage_stats


def test_quantizer_shapes_and_dtypes():
    vq = VectorQuantizer(codebook_size=512, codebook_dim=16)
    z = mx.random.normal((2, 13, 20, 16))
    z_q, indices, loss = vq(z)
    assert z_q.shape == z.shape
    assert indices.shape == (2, 13, 20) and indices.dtype == mx.int32
    assert loss.shape == ()


def test_indices_in_range_and_decode_matches():
    vq = VectorQuantizer(codebook_size=64, codebook_dim=8)
    z = mx.random.normal((4, 5, 6, 8))
    z_q, indices, _ = vq(z)
    idx = np.array(indices)
    assert idx.min() >= 0 and idx.max() < 64
    np.testing.assert_allclose(np.array(vq.decode(indices)), np.array(z_q), atol=1e-5)
    assert vq.decode(mx.array([[[3]]])).shape == (1, 1, 1, 8)


def test_lookup_is_cosine_nearest_code():
    vq = VectorQuantizer(codebook_size=16, codebook_dim=4)
    codes = np.array(vq.codes())
    z = 5.0 * codes[[7, 2, 11]].reshape(1, 1, 3, 4)  # scale does not matter for cosine
    assert np.array(vq.lookup(mx.array(z))).reshape(-1).tolist() == [7, 2, 11]


def test_straight_through_gradient_reaches_encoder_output():
    vq = VectorQuantizer(codebook_size=16, codebook_dim=4)
    z = mx.random.normal((1, 2, 2, 4))
    grad = mx.grad(lambda z: mx.sum(vq(z)[0] * mx.arange(4)))(z)
    assert float(mx.abs(grad).sum()) > 0


def test_dead_code_restart_revives_unused_codes():
    vq = VectorQuantizer(codebook_size=32, codebook_dim=8)
    # data concentrated near 2 directions: most codes are never used
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 8))
    data = np.concatenate([centres[i] + 0.3 * rng.normal(size=(200, 8)) for i in range(2)])
    z = mx.array(data.reshape(1, 20, 20, 8).astype(np.float32))
    counts = np.bincount(np.array(vq.lookup(z)).reshape(-1), minlength=32)
    dead = counts == 0
    assert dead.sum() > 10
    n = vq.restart_codes(dead, data, np.random.default_rng(1))
    assert n == dead.sum()
    counts = np.bincount(np.array(vq.lookup(z)).reshape(-1), minlength=32)
    assert (counts[dead] > 0).sum() >= dead.sum() // 3  # revived codes now win data
    norms = np.linalg.norm(np.array(vq.codebook), axis=1)[dead]
    np.testing.assert_allclose(norms, 1.0, atol=1e-3)


def test_usage_stats():
    usage, ppl = usage_stats(np.array([5, 5, 0, 0]))
    assert usage == 0.5 and ppl == pytest.approx(2.0)
    assert usage_stats(np.zeros(4)) == (0.0, 0.0)
