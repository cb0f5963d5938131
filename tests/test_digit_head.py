"""The "digits" output head: grid codes written as their FSQ digits one after another.

Its likelihood is a distribution over every code (it sums to 1 and training minimises
exactly -log p(code)); its draws follow that distribution; both sampling engines give the
same codes with and without guidance, filters or temperature; the KV cache changes nothing;
and a model trained with it loads, generates palette-true images and agrees across engines.
"""

import dataclasses
import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import yaml

from pixelscene.config import Config, ConfigError
from pixelscene.data.vga import DAC_LEVELS
from pixelscene.pipeline import PixelScene
from pixelscene.sampling import generate_codes
from pixelscene.sampling.samplers import make_sampler, pick
from pixelscene.testing import (
    micro_categorical_config,
    micro_categorical_setup,
    micro_config,
    micro_transformer_run,
)
from pixelscene.train.transformer import TRAIN_LOG, train_transformer
from pixelscene.transformer.digits import DigitHead, code_digits
from pixelscene.transformer.model import build_transformer


def digits_config() -> Config:
    cfg = micro_categorical_config()
    cfg.transformer.head = "digits"
    return cfg.validate()


@pytest.fixture(scope="module")
def model():
    mx.random.seed(0)
    m = build_transformer(digits_config())
    m.eval()
    mx.eval(m.parameters())
    return m


def prompts(model, seed=4):
    ids = mx.array(np.random.default_rng(seed).integers(1, 64, (2, 8)).astype(np.int32))
    return model.encode_text(ids, ids > 0)


def test_the_layout_and_the_model_have_the_tokenizers_digits(model):
    cfg = digits_config()
    layout = cfg.token_layout()
    assert layout.digits == tuple(cfg.tokenizer.fsq_levels)
    assert model.digits and model.grid_start == layout.grid_start
    assert model.rest_low == cfg.tokenizer.codebook_size  # the head scores levels and EMPTY
    assert model.head.weight.shape[0] == layout.vocab - cfg.tokenizer.codebook_size
    assert not build_transformer(micro_categorical_config()).digits  # the default: full head


def test_config_refuses_a_digits_head_it_cannot_use():
    cfg = micro_config()  # a VQGAN's 512 codes have no digits
    cfg.transformer.head = "digits"
    with pytest.raises(ConfigError, match="digits"):
        cfg.validate()
    cfg = micro_categorical_config()
    cfg.transformer.head = "digits"
    cfg.sampling.noise = "gumbel"
    with pytest.raises(ConfigError, match="uniform"):
        cfg.validate()
    cfg.sampling.noise = "uniform"
    cfg.transformer.head = "factorised"
    with pytest.raises(ConfigError, match="head"):
        cfg.validate()


def test_digits_round_trip_the_codes():
    levels = [5, 4, 3]
    codes = np.arange(60)
    d = code_digits(codes, levels)
    assert d.max(axis=0).tolist() == [4, 3, 2] and len({tuple(r) for r in d}) == 60
    assert np.array_equal(d @ np.array([1, 5, 20]), codes)
    head = DigitHead(8, levels)
    assert np.array_equal(np.array(head.digits(mx.array(codes))), d)


def test_the_likelihood_is_a_distribution_and_training_minimises_its_negative_log(model):
    layout = digits_config().token_layout()
    rng = np.random.default_rng(3)
    g = layout.grid_start
    tokens = np.concatenate(
        [rng.integers(60, layout.vocab, (2, g)), rng.integers(0, 60, (2, layout.length - g))], 1
    )
    tokens = mx.array(tokens.astype(np.int32))
    states, mask = prompts(model)
    nll = model.nll(tokens, states, mask)
    assert nll.shape == (2, layout.length) and bool(mx.all(nll > 0))
    h = model.hidden(model.inputs_for(tokens), model.context(states, mask))[:, g:]
    log_p = model.digit_head.log_probs(h)  # (2, grid, 60): every code's log-probability
    assert mx.abs(mx.logsumexp(log_p, axis=-1)).max().item() < 1e-5
    picked = mx.take_along_axis(log_p, tokens[:, g:, None], axis=-1)[..., 0]
    assert mx.abs(-picked - nll[:, g:]).max().item() < 1e-4
    # palette positions: the head's softmax over levels and EMPTY
    h_all = model.hidden(model.inputs_for(tokens), model.context(states, mask))
    rest = nn.log_softmax(model.head(h_all[:, :g]), axis=-1)
    want = -mx.take_along_axis(rest, (tokens[:, :g] - 60)[..., None], axis=-1)[..., 0]
    assert mx.abs(want - nll[:, :g]).max().item() < 1e-4


def test_draws_follow_the_codes_distribution():
    """Codes drawn digit by digit, unguided at temperature 1, have p(code | h)'s
    frequencies (chi-square over 6,000 draws)."""
    mx.random.seed(2)
    head = DigitHead(16, [4, 3, 2])
    h = mx.random.normal((1, 16)) * 2
    p = np.exp(np.array(head.log_probs(h)[0], dtype=np.float64))
    n = 6000
    u = mx.random.uniform(shape=(n, 3), key=mx.random.key(7))
    sampler = make_sampler(1.0, 0, 1.0, "uniform")
    codes = np.array(
        head.sample(mx.repeat(h, n, 0), lambda k, lg: pick(sampler, 1.0, False, lg, u[:, k]), False)
    )
    counts = np.bincount(codes, minlength=24)
    expected = n * p
    big = expected >= 5
    chi2 = (((counts - expected) ** 2 / expected)[big]).sum()
    assert chi2 < big.sum() + 5 * np.sqrt(2 * big.sum())  # far above this: not p's draws
    assert counts[~big].sum() <= max(30, 3 * expected[~big].sum())


@pytest.mark.parametrize(
    "settings",
    [dict(cfg_scale=2.0), dict(cfg_scale=1.0), dict(cfg_scale=2.0, top_k=2),
     dict(cfg_scale=3.0, top_p=0.7), dict(cfg_scale=2.0, temperature=0.0)],
    ids=["guided", "unguided", "top-k", "top-p", "greedy"],
)  # fmt: skip
def test_engines_give_the_same_codes(model, settings):
    layout = digits_config().token_layout()
    states, mask = prompts(model)
    runs = {}
    for engine in ("cpu", "mlx"):
        for step in generate_codes(
            model, states, mask, engine=engine, seeds=[5, 6, 7, 8], noise="uniform", **settings
        ):
            runs[engine] = step.codes
    assert np.array_equal(runs["cpu"], runs["mlx"])
    g = layout.grid_start
    palette, grid = runs["cpu"][:, :g], runs["cpu"][:, g:]
    assert palette.min() >= 60 and palette.max() < layout.vocab and grid.max() < 60
    if settings.get("temperature", 1.0) > 0 and "top_k" not in settings:
        assert len(np.unique(grid)) > 20  # real draws over the codes


def test_cached_states_equal_the_uncached_forward(model):
    layout = digits_config().token_layout()
    states, mask = prompts(model, seed=2)
    ctx = model.context(states, mask)
    tokens = mx.array(np.random.default_rng(3).integers(0, layout.vocab, (2, layout.length)))
    inputs = model.inputs_for(tokens)
    ref = model.hidden(inputs, ctx)
    cache = model.make_cache()
    steps = [model.hidden(inputs[:, t : t + 1], ctx, cache, t) for t in range(layout.length)]
    assert mx.abs(ref - mx.concatenate(steps, axis=1)).max().item() < 1e-4
    with pytest.raises(ValueError, match="digit"):
        model.decode(inputs, ctx)  # no full logits to give


def test_an_image_is_the_same_alone_as_in_a_batch(model):
    states, mask = prompts(model)
    kw = dict(noise="uniform", cfg_scale=2.0, engine="cpu")
    batch = [s.codes for s in generate_codes(model, states, mask, seeds=[1, 2], **kw)][-1]
    alone = [s.codes for s in generate_codes(model, states[1:], mask[1:], seeds=[2], **kw)][-1]
    assert np.array_equal(alone[0], batch[1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A micro categorical tokenizer and a digits-head transformer trained on its tokens."""
    root = tmp_path_factory.mktemp("digits")
    data, tok_dir = micro_categorical_setup(root)
    cfg = micro_categorical_config()
    preset = micro_transformer_run(steps=12, warmup_steps=1, learning_rate=3e-3)
    preset["transformer"]["head"] = "digits"  # its preset names the tokenizer it needs
    preset["image_tokenizer"] = "categorical"
    preset["tokenizer"] = dataclasses.asdict(cfg.tokenizer)
    preset["sampling"] = {"noise": "uniform"}
    path = root / "digits.yaml"
    path.write_text(yaml.safe_dump(preset))
    out = root / "model"
    result = train_transformer(path, data, tok_dir, out, progress=False)
    return out, result


def test_training_lowers_the_loss_and_the_model_generates_palette_true_images(trained):
    out, result = trained
    assert result.step == 12
    rows = [json.loads(line) for line in (out / TRAIN_LOG).read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) >= 4 and np.mean(losses[-2:]) < np.mean(losses[:2])
    codes = {}
    for engine in ("cpu", "mlx"):
        scene = PixelScene.load(out, engine=engine)
        assert scene.transformer.digits
        images = scene.generate(["a castle at sunset", ""], n=2, seed=11, batch_size=3)
        codes[engine] = np.stack([im.codes for im in images])
        for im in images:
            assert np.isin(im.pixels, DAC_LEVELS).all()  # every channel a 6-bit DAC level
    assert np.array_equal(codes["cpu"], codes["mlx"])
