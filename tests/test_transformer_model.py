import mlx.core as mx
import numpy as np
import pytest

from pixelscene.model_io import load_weights, save_weights
from pixelscene.sampling import attention_window
from pixelscene.testing import MICRO_TEXT_LEN, micro_transformer_config
from pixelscene.transformer import ImageTransformer, KVCache, StaticKVCache
from pixelscene.transformer.text_encoder import TextEncoder

L = MICRO_TEXT_LEN
micro = micro_transformer_config


def text(batch=2, lengths=(3, 6)):
    ids = np.random.default_rng(0).integers(1, 64, (batch, L)).astype(np.int32)
    mask = np.arange(L)[None, :] < np.array(lengths)[:, None]
    return mx.array(ids * mask), mx.array(mask)


@pytest.fixture(scope="module", params=[False, True], ids=["cross-attention", "pooled"])
def model(request):
    mx.random.seed(1)
    m = ImageTransformer(micro(pooled_text=request.param), codebook_size=512, seq_len=260)
    m.eval()
    mx.eval(m.parameters())
    return m


def test_shapes_and_bos(model):
    ids, mask = text()
    states, smask = model.encode_text(ids, mask)
    assert states.shape == (2, L, 32) and smask.dtype == mx.bool_
    codes = mx.random.randint(0, 512, (2, 260))
    logits = model(codes, states, smask)
    assert logits.shape == (2, 260, 512) and logits.dtype == mx.float32
    assert model.bos_id == 512
    inputs = model.inputs_for(codes)
    assert (inputs[:, 0] == 512).all().item() and (inputs[:, 1:] == codes[:, :-1]).all().item()


def test_text_encoder_padding_does_not_change_outputs():
    mx.random.seed(2)
    enc = TextEncoder(micro(dropout=0.0))
    ids, mask = text(lengths=(3, 5))
    out = enc(ids, mask)
    garbage = mx.where(mask, ids, mx.array(np.random.default_rng(3).integers(1, 64, (2, L))))
    out2 = enc(garbage, mask)
    assert mx.abs(out - out2).max().item() < 1e-5
    short = enc(ids[:, :5], mask[:, :5])  # less padding
    assert mx.abs(out[:, :5] - short).max().item() < 1e-5
    assert mx.abs(out * ~mask[..., None]).max().item() == 0.0


def test_decoder_ignores_padded_states(model):
    ids, mask = text(lengths=(3, 6))
    states, smask = model.encode_text(ids, mask)
    noisy = mx.where(smask[..., None], states, mx.random.normal(states.shape) * 10)
    codes = mx.random.randint(0, 512, (2, 260))
    diff = mx.abs(model(codes, states, smask) - model(codes, noisy, smask)).max().item()
    assert diff < 1e-4


def test_empty_caption_reads_the_null_state(model):
    ids, mask = text()
    states, smask = model.encode_text(ids, mask)
    empty = mx.zeros_like(smask)
    codes = mx.random.randint(0, 512, (2, 260))
    a = model(codes, states, empty)
    b = model(codes, mx.random.normal(states.shape), empty)  # states do not matter
    assert mx.abs(a - b).max().item() < 1e-5
    assert mx.abs(a - model(codes, states, smask)).max().item() > 1e-3


def test_cached_equals_uncached_over_whole_sequence(model):
    ids, mask = text()
    states, smask = model.encode_text(ids, mask)
    codes = mx.random.randint(0, 512, (2, 260))
    ref = model(codes, states, smask)
    ctx = model.context(states, smask)
    inputs = model.inputs_for(codes)
    cache = model.make_cache()
    assert all(isinstance(c, KVCache) for c in cache)
    steps = [model.decode(inputs[:, t : t + 1], ctx, cache, t) for t in range(260)]
    assert cache[0].offset == 260
    assert mx.abs(ref - mx.concatenate(steps, axis=1)).max().item() < 1e-4
    # fixed-size cache written at an array offset, as the compiled sampler uses it
    static = [StaticKVCache.empty(2, 4, 260, 8) for _ in model.blocks]
    out = []
    for t in range(260):
        off = mx.array([t], mx.int32)
        for c in static:
            c.offset = off
        out.append(model.decode(inputs[:, t : t + 1], ctx, static, off))
    assert mx.abs(ref - mx.concatenate(out, axis=1)).max().item() < 1e-4
    # the same, attending over the filled prefix rounded up to windows of 64 slots only
    static = [StaticKVCache.empty(2, 4, 260, 8) for _ in model.blocks]
    out = []
    for t in range(260):
        off = mx.array([t], mx.int32)
        for c in static:
            c.offset, c.window = off, attention_window(t, 260, 64)
        out.append(model.decode(inputs[:, t : t + 1], ctx, static, off))
    assert static[0].window == 260 and attention_window(0, 260, 64) == 64
    assert mx.abs(ref - mx.concatenate(out, axis=1)).max().item() < 1e-4
    # a prefix chunk then single steps also agrees
    cache = model.make_cache()
    first = model.decode(inputs[:, :100], ctx, cache, 0)
    rest = [model.decode(inputs[:, t : t + 1], ctx, cache, t) for t in range(100, 260)]
    assert mx.abs(ref - mx.concatenate([first, *rest], axis=1)).max().item() < 1e-4


def test_dropout_only_in_training():
    mx.random.seed(3)
    m = ImageTransformer(micro(dropout=0.5), codebook_size=512, seq_len=260)
    ids, mask = text()
    states, smask = m.encode_text(ids, mask)
    codes = mx.random.randint(0, 512, (2, 260))
    m.train()
    assert mx.abs(m(codes, states, smask) - m(codes, states, smask)).max().item() > 1e-3
    m.eval()
    states, smask = m.encode_text(ids, mask)
    assert mx.abs(m(codes, states, smask) - m(codes, states, smask)).max().item() == 0.0


def test_external_text_states_plug_in():
    m = ImageTransformer(micro(text_encoder="minilm"), codebook_size=512, seq_len=260, text_dim=384)
    assert "text_encoder" not in m and m.text_proj.weight.shape == (32, 384)
    states = mx.random.normal((2, L, 384))
    logits = m(mx.random.randint(0, 512, (2, 260)), states, mx.ones((2, L), dtype=mx.bool_))
    assert logits.shape == (2, 260, 512)
    with pytest.raises(ValueError):
        m.encode_text(*text())


def test_save_load_round_trip(model, tmp_path):
    save_weights(tmp_path / "transformer.safetensors", model)
    mx.random.seed(9)
    other = ImageTransformer(model.cfg, codebook_size=512, seq_len=260)
    other.eval()
    load_weights(tmp_path / "transformer.safetensors", other)
    ids, mask = text()
    codes = mx.random.randint(0, 512, (2, 260))
    a = model(codes, *model.encode_text(ids, mask))
    b = other(codes, *other.encode_text(ids, mask))
    assert mx.abs(a - b).max().item() == 0.0


def test_pooled_caption_reaches_the_first_code():
    """With pooled_text the caption changes even BOS's logits through the input path alone."""
    mx.random.seed(2)
    m = ImageTransformer(micro(pooled_text=True), codebook_size=512, seq_len=260)
    m.eval()
    for block in m.blocks:  # cut the cross-attention path: only the pooled path is left
        block.cross_attn.proj.weight = mx.zeros_like(block.cross_attn.proj.weight)
        block.cross_attn.proj.bias = mx.zeros_like(block.cross_attn.proj.bias)
    ids, mask = text()
    states, smask = m.encode_text(ids, mask)
    codes = mx.random.randint(0, 512, (2, 260))
    with_text = m(codes, states, smask)
    without = m(codes, states, mx.zeros_like(smask))
    assert mx.abs(with_text[:, 0] - without[:, 0]).max().item() > 1e-3
    plain = ImageTransformer(micro(), codebook_size=512, seq_len=260)
    assert "pooled_mlp" in m and "pooled_mlp" not in plain
