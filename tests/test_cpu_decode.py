import mlx.core as mx
import numpy as np
import pytest

from pixelscene.sampling import numpy_decoder
from pixelscene.testing import MICRO_TEXT_LEN, micro_transformer_config
from pixelscene.transformer import ImageTransformer
from pixelscene.transformer.cpu_decode import GEMV_MAX_ROWS, NumpyDecoder

L = MICRO_TEXT_LEN


def build(pooled_text: bool) -> ImageTransformer:
    mx.random.seed(3)
    cfg = micro_transformer_config(text_num_layers=1, pooled_text=pooled_text)
    m = ImageTransformer(cfg, codebook_size=128, seq_len=60)
    # LayerNorms away from their identity initialisation, so folding them is exercised
    for norm in [m.norm] + [n for b in m.blocks for n in (b.norm1, b.norm2, b.norm3)]:
        norm.weight = 1.0 + 0.3 * mx.random.normal(norm.weight.shape)
        norm.bias = 0.3 * mx.random.normal(norm.bias.shape)
    m.eval()
    mx.eval(m.parameters())
    return m


def context(m: ImageTransformer, batch: int):
    rng = np.random.default_rng(batch)
    ids = rng.integers(1, 64, (batch, L)).astype(np.int32)
    lengths = rng.integers(0, L + 1, batch)  # includes empty captions (the null state)
    mask = np.arange(L)[None, :] < lengths[:, None]
    return m.context(*m.encode_text(mx.array(ids * mask), mx.array(mask)))


@pytest.mark.parametrize("pooled", [False, True], ids=["cross-attention", "pooled"])
@pytest.mark.parametrize("batch", [1, 2, GEMV_MAX_ROWS + 3], ids=["b1", "b2", "gemm"])
def test_steps_match_the_mlx_forward_over_a_whole_sequence(pooled, batch):
    m = build(pooled)
    ctx = context(m, batch)
    tokens = np.random.default_rng(7).integers(0, m.codebook_size, (batch, m.seq_len))
    tokens[:, 0] = m.bos_id
    ref = np.array(m.decode(mx.array(tokens), ctx))  # (B, S, V), no cache
    dec = NumpyDecoder(m)
    state = dec.start(ctx)
    out = np.stack([dec.step(state, tokens[:, t], t) for t in range(m.seq_len)], axis=1)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-4
    assert np.abs(ref).max() > 0.5  # logits of real size, so the tolerance means something


def test_rows_do_not_depend_on_the_batch():
    m = build(True)
    ctx = context(m, GEMV_MAX_ROWS + 3)
    dec = NumpyDecoder(m)
    big, one = (
        dec.start(ctx),
        dec.start(type(ctx)([(k[2:3], v[2:3]) for k, v in ctx.kv], ctx.bias[2:3], ctx.pooled[2:3])),
    )
    tokens = np.random.default_rng(1).integers(0, m.codebook_size, (GEMV_MAX_ROWS + 3, 20))
    for t in range(20):
        a = dec.step(big, tokens[:, t], t)[2]
        b = dec.step(one, tokens[2:3, t], t)[0]
        assert np.abs(a - b).max() < 1e-5


def test_position_outside_the_sequence_is_rejected():
    m = build(False)
    dec = NumpyDecoder(m)
    with pytest.raises(ValueError, match="position 60"):
        dec.step(dec.start(context(m, 1)), np.array([m.bos_id]), m.seq_len)


def test_decoder_is_reused_until_weights_change():
    m = build(False)
    first = numpy_decoder(m)
    assert numpy_decoder(m) is first
    m.head.weight = m.head.weight * 2.0  # new weights: a fresh copy
    second = numpy_decoder(m)
    assert second is not first
    assert np.allclose(second.head.w, 2.0 * first.head.w)
