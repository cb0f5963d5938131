"""The transformer on the categorical tokenizer's tokens: the palette, then the code grid.

Layouts and segment masks, bounded Gumbel noise for long sequences, the token cache, a
micro end-to-end run (train -> load -> generate with both engines -> paint), and the
sampler's guarantees (KV cache equal to the uncached forward, engines agree)."""

import mlx.core as mx
import numpy as np
import pytest
import yaml

from pixelscene import model_io
from pixelscene.config import load_config
from pixelscene.data.token_cache import ensure_token_cache, vqgan_fingerprint
from pixelscene.data.vga import DAC_LEVELS
from pixelscene.pipeline import PixelScene
from pixelscene.sampling import GumbelNoise, generate_codes, gumbel_noise, samplers
from pixelscene.testing import (
    make_random_model_dir,
    micro_categorical_config,
    micro_categorical_setup,
    micro_transformer_run,
)
from pixelscene.train.transformer import layout_weights, train_transformer
from pixelscene.transformer.model import MASKED, build_transformer


def test_layouts_of_the_presets():
    tiny = load_config("tiny").token_layout()
    assert (tiny.vocab, tiny.shape, tiny.length, tiny.segments) == (512, (13, 20), 260, ())
    pixel = load_config("pixel").token_layout()
    P, C = 64, load_config("pixel").tokenizer.codebook_size
    assert pixel.shape == (3 * P + 26 * 40,) and pixel.grid == (26, 40)
    assert pixel.grid_start == 3 * P and pixel.vocab == C + 65
    # the segments tile the sequence: palette positions take levels and EMPTY, the grid codes
    assert pixel.segments == ((0, 3 * P, C, C + 65), (3 * P, pixel.length, 0, C))


def test_layout_weights_weigh_the_grids_first_row_and_keep_the_mean():
    layout = micro_categorical_config().token_layout()
    w = layout_weights(layout, first_row_weight=3.0)
    start, cols = layout.grid_start, layout.grid[1]
    assert w.shape == (layout.length,) and abs(w.mean() - 1.0) < 1e-5
    assert np.allclose(w[start : start + cols], 3 * w[start + cols])
    assert np.allclose(w[:start], w[start + cols])  # palette tokens weigh as other codes


@pytest.fixture(scope="module")
def model():
    mx.random.seed(0)
    m = build_transformer(micro_categorical_config())
    m.eval()
    mx.eval(m.parameters())
    return m


def test_positions_take_only_their_segments_tokens(model):
    layout = micro_categorical_config().token_layout()
    ids = mx.array(np.random.default_rng(0).integers(1, 64, (2, 8)).astype(np.int32))
    ctx = model.context(*model.encode_text(ids, ids > 0))
    tokens = mx.array(np.random.default_rng(1).integers(0, layout.vocab, (2, layout.length)))
    logits = np.array(model.decode(model.inputs_for(tokens), ctx))
    for start, stop, low, high in layout.segments:
        inside = logits[:, start:stop, low:high]
        assert np.abs(inside).max() < 100  # real logits
        outside = np.concatenate(
            [logits[:, start:stop, :low], logits[:, start:stop, high:]], axis=-1
        )
        assert np.all(outside < MASKED / 2)
    assert model.token_bias_at(0)[0] == MASKED and model.token_bias_at(0)[-1] == 0
    for t, (low, high) in enumerate(model.token_ranges()):  # where token_bias_at adds 0
        assert np.flatnonzero(model.token_bias_at(t) == 0).tolist() == list(range(low, high))


@pytest.mark.parametrize("noise", ["uniform", "gumbel"])
@pytest.mark.parametrize("cfg_scale", [2.0, 1.0], ids=["guided", "unguided"])
def test_cpu_engine_on_token_ranges_gives_the_full_heads_codes(model, noise, cfg_scale):
    """The cpu engine's head and pick read only a position's token range; the mlx engine
    adds the segment biases to the whole head's logits and draws over every token."""
    layout = micro_categorical_config().token_layout()
    ids = mx.array(np.random.default_rng(4).integers(1, 64, (2, 8)).astype(np.int32))
    states, mask = model.encode_text(ids, ids > 0)
    kw = dict(seeds=[5, 6, 7, 8], cfg_scale=cfg_scale, noise=noise, compiled=False)
    runs = {}
    for engine in ("cpu", "mlx"):
        for step in generate_codes(model, states, mask, engine=engine, **kw):
            runs[engine] = step.codes
    assert np.array_equal(runs["cpu"], runs["mlx"])
    palette, grid = runs["cpu"][:, : layout.grid_start], runs["cpu"][:, layout.grid_start :]
    assert palette.min() >= 60 and palette.max() < layout.vocab and grid.max() < 60
    assert len(np.unique(grid)) > 20  # real draws, not one token


def test_cached_decode_equals_the_uncached_forward(model):
    layout = micro_categorical_config().token_layout()
    ids = mx.array(np.random.default_rng(2).integers(1, 64, (2, 8)).astype(np.int32))
    ctx = model.context(*model.encode_text(ids, ids > 0))
    tokens = mx.array(np.random.default_rng(3).integers(0, layout.vocab, (2, layout.length)))
    inputs = model.inputs_for(tokens)
    ref = model.decode(inputs, ctx)
    cache = model.make_cache()
    steps = [model.decode(inputs[:, t : t + 1], ctx, cache, t) for t in range(layout.length)]
    assert mx.abs(ref - mx.concatenate(steps, axis=1)).max().item() < 1e-4


def test_noise_in_chunks_depends_on_each_seed_alone(monkeypatch):
    whole = GumbelNoise([7, 8], 5, 4)
    assert whole.chunks == 1
    assert mx.array_equal(mx.stack([whole.at(t) for t in range(5)], 1), gumbel_noise([7, 8], 5, 4))
    monkeypatch.setattr(samplers, "NOISE_CHUNK_VALUES", 8)  # 2 positions of 4 per chunk
    both, alone = GumbelNoise([7, 8], 5, 4), GumbelNoise([8], 5, 4)
    assert both.chunks == 3
    rows = [both.at(t) for t in range(5)]
    assert all(mx.array_equal(rows[t][1], alone.at(t)[0]) for t in range(5))
    assert not mx.array_equal(rows[0], rows[2])  # chunks draw different noise
    assert len({np.array(r).tobytes() for r in rows}) == 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A micro categorical tokenizer folder, a synthetic dataset and a transformer trained
    on its tokens (sprite-weighted) into a new model folder."""
    root = tmp_path_factory.mktemp("categorical")
    data, tok_dir = micro_categorical_setup(root)
    preset = micro_transformer_run(steps=3, warmup_steps=1, checkpoint_every=2, sprite_weight=2.0)
    preset_path = root / "micro.yaml"
    preset_path.write_text(yaml.safe_dump(preset))
    out = root / "model"
    result = train_transformer(preset_path, data, tok_dir, out, progress=False)
    return data, tok_dir, out, result


def test_training_on_categorical_tokens_writes_a_complete_model(trained):
    data, tok_dir, out, result = trained
    assert result.step == 3 and np.isfinite(result.last_train["loss"])
    assert (out / "tokenizer.safetensors").is_file() and (out / "transformer.safetensors").is_file()
    assert model_io.load_model_config(out).image_tokenizer == "categorical"
    cache = ensure_token_cache(tok_dir, data)
    layout = micro_categorical_config().token_layout()
    assert cache.codes.shape[1:] == layout.shape
    assert (data / "sprites_13x20.npz").is_file()  # sprite cover at the tokenizer's patches
    # palette tokens hold levels (or EMPTY), the grid holds codes
    head, grid = cache.codes[:, : layout.grid_start], cache.codes[:, layout.grid_start :]
    assert head.min() >= 60 and head.max() < layout.vocab and grid.max() < 60


def test_generated_images_are_palette_true_and_engines_agree(trained):
    _, _, out, _ = trained
    codes = {}
    for engine in ("cpu", "mlx"):
        scene = PixelScene.load(out, engine=engine)
        images = scene.generate(["a castle at sunset", ""], n=2, seed=11, batch_size=3)
        codes[engine] = np.stack([im.codes for im in images])
        for im in images:
            assert im.codes.shape == scene.codes_shape
            assert np.isin(im.pixels, DAC_LEVELS).all()  # every channel a 6-bit DAC level
            assert np.array_equal(scene.decode_codes(im.codes), im.pixels)
    assert np.array_equal(codes["cpu"], codes["mlx"])
    layout = micro_categorical_config().token_layout()
    assert (codes["cpu"][:, : layout.grid_start] >= 60).all()
    assert (codes["cpu"][:, layout.grid_start :] < 60).all()
    # an image is the same alone as in a batch (image 2: prompt "" with seed 11 + 2)
    alone = PixelScene.load(out, engine="cpu").generate([""], n=1, seed=13)[0].codes
    assert np.array_equal(alone, codes["cpu"][2])


def test_engines_agree_when_noise_comes_in_chunks(trained, monkeypatch):
    _, _, out, _ = trained
    monkeypatch.setattr(samplers, "NOISE_CHUNK_VALUES", 125 * 16)  # 16 positions a chunk
    scene = PixelScene.load(out, engine="cpu")
    states, mask = scene.encode_prompts(["a castle at sunset"])
    runs = []
    for engine in ("cpu", "mlx"):
        for step in generate_codes(scene.transformer, states, mask, seeds=[3, 4], engine=engine):
            if step.codes is not None:
                runs.append(step.codes)
    assert np.array_equal(runs[0], runs[1])


def test_token_cache_fingerprint_follows_the_tokenizers_config(trained, tmp_path):
    _, tok_dir, _, _ = trained
    other = tmp_path / "other"
    cfg = micro_categorical_config()
    cfg.tokenizer.fsq_levels = [4, 5, 3]  # same weight shapes, other codes
    model_io.save_model_config(other, cfg)
    (other / "tokenizer.safetensors").write_bytes((tok_dir / "tokenizer.safetensors").read_bytes())
    assert vqgan_fingerprint(other) != vqgan_fingerprint(tok_dir)


def test_a_random_categorical_model_folder_loads_and_checks_codes(tmp_path):
    from pixelscene.pipeline import GenerationError

    folder = make_random_model_dir(tmp_path / "m", micro_categorical_config())
    scene = PixelScene.load(folder)
    assert scene.codes_shape == (24 + 260,) and scene.codebook_size == 125
    with pytest.raises(GenerationError, match=r"shape \(284,\)"):
        scene.decode_codes(np.zeros((13, 20), np.int32))
    with pytest.raises(GenerationError, match="0..124"):
        scene.decode_codes(np.full(284, 125, np.int32))
    (folder / "tokenizer.safetensors").unlink()
    with pytest.raises(Exception, match="missing tokenizer.safetensors"):
        PixelScene.load(folder)
