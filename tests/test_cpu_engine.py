import mlx.core as mx
import numpy as np
import pytest

from pixelscene.sampling import cpu_kernels, sample_codes
from pixelscene.sampling.cpu_engine import (
    PARALLEL_MIN_ROWS,
    CpuDecoder,
    cpu_decoder,
    sampler_threads,
    warm_up,
)
from pixelscene.testing import MICRO_TEXT_LEN, micro_transformer_config
from pixelscene.transformer import ImageTransformer

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
@pytest.mark.parametrize(
    "batch", [1, 2, 3, 7, PARALLEL_MIN_ROWS + 1], ids=["b1", "b2", "b3", "b7", "parts"]
)
def test_steps_match_the_mlx_forward_over_a_whole_sequence(pooled, batch):
    m = build(pooled)
    ctx = context(m, batch)
    tokens = np.random.default_rng(7).integers(0, m.codebook_size, (batch, m.seq_len))
    tokens[:, 0] = m.bos_id
    ref = np.array(m.decode(mx.array(tokens), ctx))  # (B, S, V), no cache
    dec = CpuDecoder(m)
    state = dec.start(ctx)
    parallel = batch >= PARALLEL_MIN_ROWS
    assert len(state["parts"]) == (min(2, sampler_threads()) if parallel else 1)
    out = np.stack([dec.step(state, tokens[:, t], t) for t in range(m.seq_len)], axis=1)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-4
    assert np.abs(ref).max() > 0.5  # logits of real size, so the tolerance means something


def test_rows_sharing_a_caption_step_as_the_mlx_forward(monkeypatch):
    """Images of one prompt, and every unconditional row, share their caption (as
    `generate_codes` passes them): its keys/values are computed and kept once, and the
    compiled step reads them only up to the caption's last unmasked position."""
    monkeypatch.setenv("PIXELSCENE_SAMPLER_THREADS", "1")  # one part: all rows together
    m = build(True)
    ids = np.zeros((3, L), np.int32)
    ids[0, :3], ids[1, :5] = [5, 6, 7], [8, 9, 10, 11, 12]  # captions A, B and the null one
    states, mask = m.encode_text(mx.array(ids), mx.array(ids > 0))
    rows = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    take = mx.array(rows)
    ref_ctx = m.context(states[take], mask[take])  # one context row per row, as MLX steps
    tokens = np.random.default_rng(5).integers(0, m.codebook_size, (12, m.seq_len))
    tokens[:, 0] = m.bos_id
    ref = np.array(m.decode(mx.array(tokens), ref_ctx))
    dec = CpuDecoder(m)
    state = dec.start(m.context(states, mask), rows)
    ((_, _, part),) = state["parts"]
    assert part["cross_k"].shape[1] == 3  # A, B and the null caption, once each
    assert part["cross_rows"].tolist() == rows.tolist()
    assert part["cross_lengths"].tolist() == [3, 5, 1]
    out = np.stack([dec.step(state, tokens[:, t], t) for t in range(m.seq_len)], axis=1)
    assert np.abs(out - ref).max() < 1e-4
    with pytest.raises(ValueError, match="3 captions"):
        dec.start(m.context(states, mask), [0, 3])


def test_rows_do_not_depend_on_the_batch():
    m = build(True)
    ctx = context(m, 7)
    dec = CpuDecoder(m)
    big, one = (
        dec.start(ctx),
        dec.start(type(ctx)([(k[2:3], v[2:3]) for k, v in ctx.kv], ctx.bias[2:3], ctx.pooled[2:3])),
    )
    tokens = np.random.default_rng(1).integers(0, m.codebook_size, (7, 20))
    for t in range(20):
        a = dec.step(big, tokens[:, t], t)[2]
        b = dec.step(one, tokens[2:3, t], t)[0]
        assert np.abs(a - b).max() < 1e-5


def test_position_outside_the_sequence_is_rejected():
    m = build(False)
    dec = CpuDecoder(m)
    with pytest.raises(ValueError, match="position 60"):
        dec.step(dec.start(context(m, 1)), np.array([m.bos_id]), m.seq_len)


def test_decoder_is_reused_until_weights_change():
    m = build(False)
    first = cpu_decoder(m)
    assert cpu_decoder(m) is first
    m.head.weight = m.head.weight * 2.0  # new weights: a fresh copy
    second = cpu_decoder(m)
    assert second is not first
    assert np.allclose(second.head[0], 2.0 * first.head[0])


def test_float16_weights_step_exactly_as_their_float32_values():
    from pixelscene.model_io import round_to_float16

    m = build(False)
    round_to_float16(m)
    ctx = context(m, 2)
    dec, ref = CpuDecoder(m), CpuDecoder(m, half=False)
    assert dec.half and all(w.dtype == np.int16 for w, _ in [*dec.layers.values(), dec.head])
    assert not ref.half and all(w.dtype == np.float32 for w, _ in [*ref.layers.values(), ref.head])
    a, b = dec.start(ctx), ref.start(ctx)
    tokens = np.random.default_rng(2).integers(0, m.codebook_size, (2, 30))
    for t in range(30):
        assert np.array_equal(dec.step(a, tokens[:, t], t), ref.step(b, tokens[:, t], t))


def test_float32_weights_that_float16_cannot_hold_stay_float32():
    m = build(False)  # random float32 weights
    assert not CpuDecoder(m).half


def test_compiled_float16_weights_read_exactly_for_every_finite_value():
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.int16)
    bits = bits[np.isfinite(bits.view(np.float16))]  # zeros, subnormals, normals, both signs
    out = cpu_kernels.weights_as_float32(bits)
    assert np.array_equal(
        out.view(np.uint32), bits.view(np.float16).astype(np.float32).view(np.uint32)
    )


@pytest.mark.parametrize("rows", [1, 2, 3, 12])  # 12: past the rows that prefetch
@pytest.mark.parametrize("outputs", [9, 45])  # ragged blocks; 45: groups prefetched ahead
def test_compiled_product_matches_float64_for_both_weight_formats(rows, outputs):
    rng = np.random.default_rng(rows)
    w = (0.05 * rng.standard_normal((outputs, 40))).astype(np.float16)
    x = rng.standard_normal((rows, 40)).astype(np.float32)
    b = rng.standard_normal(outputs).astype(np.float32)
    half = np.empty((rows, outputs), np.float32)
    single = np.empty((rows, outputs), np.float32)
    cpu_kernels._linear(w.view(np.int16), b, x, half)
    cpu_kernels._linear(w.astype(np.float32), b, x, single)
    ref = x.astype(np.float64) @ w.astype(np.float64).T + b
    assert np.allclose(half, ref, rtol=1e-5, atol=1e-5)
    assert np.array_equal(half, single)  # the same values, read from half the bytes


@pytest.mark.parametrize("half", [True, False], ids=["float16", "float32"])
def test_a_token_range_steps_exactly_those_logits(half):
    """A position that may take only some tokens (a palette slot) has the head multiply only
    their weight rows: the same values as those columns of the whole head's, to the bit."""
    from pixelscene.model_io import round_to_float16

    m = build(True)
    if half:
        round_to_float16(m)
    dec = CpuDecoder(m)
    assert dec.half == half
    ctx = context(m, 3)
    whole, ranged = dec.start(ctx), dec.start(ctx)
    tokens = np.random.default_rng(4).integers(0, m.codebook_size, (3, 12))
    ranges = [(0, 128), (3, 50), (127, 128), (61, 126), (1, 2), (5, 128)]
    for t in range(12):
        full = dec.step(whole, tokens[:, t], t)
        low, high = ranges[t % len(ranges)]
        part = dec.step(ranged, tokens[:, t], t, (low, high))
        assert part.shape == (3, high - low)
        assert np.array_equal(part, full[:, low:high])
    for bad in [(5, 5), (-1, 3), (0, 129)]:
        with pytest.raises(ValueError, match="token range"):
            dec.step(whole, tokens[:, 0], 0, bad)


def numpy_inverse_cdf(logits, guide, scale, temperature, u):
    """`samplers.guided` then `samplers.inverse_cdf`, operation for operation in NumPy."""
    if guide:
        cond, uncond = np.split(logits, 2)
        logits = uncond + np.float32(scale) * (cond - uncond)
    logits = logits / np.float32(temperature)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    cumulative = np.cumsum(weights, axis=-1, dtype=np.float32)
    below = (cumulative <= u[:, None] * cumulative[:, -1:]).sum(axis=-1)
    return np.minimum(below, logits.shape[-1] - 1).astype(np.int32)


@pytest.mark.parametrize("guide", [True, False], ids=["guided", "unguided"])
def test_compiled_uniform_pick_draws_as_numpy(guide):
    rng = np.random.default_rng(int(guide))
    for trial in range(300):
        n = [1, 2, 7, 65, 600][trial % 5]
        images = 1 + trial % 3
        spread = [0.1, 1.0, 6.0][trial % 3]
        logits = (spread * rng.standard_normal((2 * images if guide else images, n))).astype(
            np.float32
        )
        u = rng.random(images).astype(np.float32)
        u[0] = [0.0, 0.9999999, u[0]][trial % 3]  # the ends of the range too
        temperature = [1.0, 0.7][trial % 2]
        out = np.empty(images, np.int32)
        cpu_kernels.pick_uniform(logits, guide, np.float32(2.5), np.float32(temperature), u, out)
        ref = numpy_inverse_cdf(logits, guide, 2.5, temperature, u)
        assert np.array_equal(out, ref), (trial, out, ref)


def test_compiled_exp_is_accurate_to_float32_rounding():
    x = np.linspace(-87.0, 0.0, 100_001, dtype=np.float32)
    y = x.copy()
    cpu_kernels.exp_nonpositive(y)
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(y - ref) / ref) < 1e-6
    masked = np.array([-1e9, -200.0], np.float32)  # a caption mask's bias: next to nothing
    cpu_kernels.exp_nonpositive(masked)
    assert np.all((masked >= 0) & (masked < 2e-38))


def test_warm_up_compiles_what_real_steps_use():
    from pixelscene.model_io import round_to_float16

    warm_up()
    compiled = len(cpu_kernels.step.signatures)
    assert compiled >= 2  # float16 bits and float32 weights
    picks = len(cpu_kernels.pick_uniform.signatures)
    assert picks >= 1
    for half in (True, False):
        m = build(False)
        if half:
            round_to_float16(m)
        dec = CpuDecoder(m)
        assert dec.half == half
        for batch in (1, PARALLEL_MIN_ROWS + 1):
            state = dec.start(context(m, batch))
            dec.step(state, np.full(batch, m.bos_id), 0)
        ids = mx.array(np.arange(1, L + 1, dtype=np.int32)[None])
        states, mask = m.encode_text(ids, ids > 0)
        for cfg_scale in (2.0, 1.0):
            sample_codes(
                m, states, mask, seeds=[1], noise="uniform", cfg_scale=cfg_scale, engine="cpu"
            )
    assert len(cpu_kernels.step.signatures) == compiled  # nothing new compiled
    assert len(cpu_kernels.pick_uniform.signatures) == picks


def test_sampler_threads_setting(monkeypatch):
    from pixelscene.errors import PixelsceneError

    monkeypatch.setenv("PIXELSCENE_SAMPLER_THREADS", "3")
    assert sampler_threads() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("PIXELSCENE_SAMPLER_THREADS", bad)
        with pytest.raises(PixelsceneError, match="PIXELSCENE_SAMPLER_THREADS"):
            sampler_threads()
    monkeypatch.setenv("PIXELSCENE_SAMPLER_THREADS", "1")
    m = build(False)
    state = CpuDecoder(m).start(context(m, PARALLEL_MIN_ROWS + 1))
    assert len(state["parts"]) == 1  # one thread: no split
