import json

import mlx.core as mx
import numpy as np
import pytest
import yaml

from pixelscene.config import load_config
from pixelscene.data.captioned_codes import batch_at, captioned_codes
from pixelscene.data.datasets import CaptionDataset
from pixelscene.data.token_cache import (
    TokenCache,
    ensure_token_cache,
    load_token_cache,
    save_token_cache,
    vqgan_fingerprint,
)
from pixelscene.errors import ModelLoadError, PixelsceneError
from pixelscene.model_io import load_model_config, load_weights, save_model_config
from pixelscene.testing import micro_transformer_run
from pixelscene.train.distributed import Shard
from pixelscene.train.transformer import (
    CHECKPOINT_DIR,
    EVAL_LOG,
    TRAIN_LOG,
    noisy_states,
    position_weights,
    sequence_loss,
    shard_normal,
    train_transformer,
)
from pixelscene.transformer import ImageTransformer, Tokenizer


def make_dataset(root, n, fingerprint, seed=0):
    """Captioned images whose (fake) codes follow their caption, with a matching token cache."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    codes = np.zeros((n, 13, 20), np.int16)
    names = []
    with open(root / "captions.jsonl", "w") as f:
        for i in range(n):
            name = f"{i:06d}.png"
            names.append(name)
            (root / "images" / name).touch()
            time_of_day = ["day", "night"][i % 2]
            codes[i] = (i % 2) * 100 + rng.integers(0, 4, (13, 20))
            for cap in (f"hills at {time_of_day}", f"a castle, {time_of_day}"):
                f.write(json.dumps({"image": name, "caption": cap}) + "\n")
    save_token_cache(root / "tokens.npz", TokenCache(codes, names, fingerprint))


def write_weights(folder, encoder, decoder):
    """A stand-in vqgan.safetensors: only the fingerprint reads it in these tests."""
    mx.save_safetensors(
        str(folder / "vqgan.safetensors"),
        {
            "encoder.conv_in.weight": mx.full((4, 3), encoder),
            "quantizer.codebook": mx.ones((8, 2)),
            "decoder.conv_out.weight": mx.full((3, 4), decoder),
        },
    )


@pytest.fixture()
def setup(tmp_path):
    vq = tmp_path / "vq"
    save_model_config(vq, load_config("tiny"))
    write_weights(vq, encoder=0.0, decoder=0.0)
    fp = vqgan_fingerprint(vq)
    make_dataset(tmp_path / "train", 24, fp)
    make_dataset(tmp_path / "held", 6, fp, seed=1)
    cfg = tmp_path / "micro.yaml"
    cfg.write_text(yaml.safe_dump(micro_transformer_run()))
    return tmp_path, vq, cfg


def run(tmp_path, vq, cfg, out, **kw):
    return train_transformer(
        cfg,
        tmp_path / "train",
        vq,
        tmp_path / out,
        eval_dir=tmp_path / "held",
        progress=False,
        **kw,
    )


def test_token_cache_round_trip_and_staleness(setup):
    tmp_path, vq, _ = setup
    cache = load_token_cache(tmp_path / "train" / "tokens.npz")
    assert cache.codes.shape == (24, 13, 20) and cache.images[0] == "000000.png"
    assert ensure_token_cache(vq, tmp_path / "train").vqgan == cache.vqgan  # fresh: reused
    write_weights(vq, encoder=0.0, decoder=1.0)  # a fine-tuned decoder: same codes
    assert vqgan_fingerprint(vq) == cache.vqgan
    write_weights(vq, encoder=1.0, decoder=1.0)  # another encoder: other codes
    assert vqgan_fingerprint(vq) != cache.vqgan
    (vq / "vqgan.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        vqgan_fingerprint(vq)


def test_batches_are_a_function_of_seed_and_step(setup):
    tmp_path, _, _ = setup
    ds = CaptionDataset(tmp_path / "train")
    tok = Tokenizer.build(["hills at day", "a castle, night"], 64, 12)
    data = captioned_codes(load_token_cache(tmp_path / "train" / "tokens.npz"), ds, tok)
    assert data.codes.shape == (24, 260) and len(data.ids) == 48
    a, b = batch_at(data, 4, 0, 7), batch_at(data, 4, 0, 7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    epoch = np.concatenate([batch_at(data, 4, 0, s)[0] for s in range(6)])
    assert len({row.tobytes() for row in epoch}) == 24  # every image once per epoch
    captions = {batch_at(data, 4, 0, s)[1].tobytes() for s in range(0, 60, 6)}
    assert len(captions) > 1  # captions vary across epochs


def test_train_writes_model_folder(setup):
    tmp_path, vq, cfg = setup
    result = run(tmp_path, vq, cfg, "out")
    out = tmp_path / "out"
    assert result.step == 8 and np.isfinite(result.last_train["loss_ema"])
    assert result.last_eval["eval_loss"] is not None
    assert {"transformer.safetensors", "tokenizer.json", "config.json", "vqgan.safetensors"} <= {
        p.name for p in out.iterdir()
    }
    rows = [json.loads(r) for r in (out / EVAL_LOG).read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8] and all("eval_loss" in r for r in rows)
    train_rows = [json.loads(r) for r in (out / TRAIN_LOG).read_text().splitlines()]
    assert [r["step"] for r in train_rows] == [1, 2, 4, 6, 8]
    assert train_rows[-1]["loss_ema"] == result.last_train["loss_ema"]
    conf = load_model_config(out)
    assert conf.transformer.embed_dim == 32 and conf.vqgan.grid_size == (13, 20)
    model = ImageTransformer(conf.transformer, 512, 260)
    load_weights(out / "transformer.safetensors", model)  # float16 on disk, strict load
    tok = Tokenizer.load(out / "tokenizer.json")
    assert tok.word_id("castle") > tok.num_buckets


def test_resume_is_exact(setup):
    tmp_path, vq, cfg = setup
    run(tmp_path, vq, cfg, "straight")
    first = run(tmp_path, vq, cfg, "resumed", stop_after=4)
    assert first.interrupted and first.step == 4
    run(tmp_path, vq, cfg, "resumed", resume=True)
    with pytest.raises(PixelsceneError, match="--resume"):
        run(tmp_path, vq, cfg, "resumed")  # a new run never overwrites a checkpoint
    for name in ("transformer.safetensors", "transformer.opt.safetensors"):
        a = mx.load(str(tmp_path / "straight" / CHECKPOINT_DIR / name))
        b = mx.load(str(tmp_path / "resumed" / CHECKPOINT_DIR / name))
        assert a.keys() == b.keys()
        assert all(mx.array_equal(a[k], b[k]).item() for k in a), name
    for log in (EVAL_LOG, TRAIN_LOG):
        a = (tmp_path / "straight" / log).read_text().splitlines()
        b = (tmp_path / "resumed" / log).read_text().splitlines()
        assert [json.loads(r)["step"] for r in a] == [json.loads(r)["step"] for r in b], log
    rows = (tmp_path / "resumed" / EVAL_LOG).read_text().splitlines()
    assert [json.loads(r)["eval_loss"] for r in rows] == [
        json.loads(r)["eval_loss"]
        for r in (tmp_path / "straight" / EVAL_LOG).read_text().splitlines()
    ]


def test_learns_caption_conditioning(setup):
    tmp_path, vq, cfg = setup
    cfg.write_text(
        yaml.safe_dump(micro_transformer_run(steps=60, learning_rate=0.01, eval_every=60))
    )
    result = run(tmp_path, vq, cfg, "learn")
    # codes are 0-3 for day and 100-103 for night: conditioned, ~log(4) = 1.39 nats
    assert result.last_eval["eval_loss"] < 2.0


def test_trains_on_cached_minilm_states(setup):
    """text_encoder "minilm": captions are encoded once into the dataset's state cache, and
    the model learns the conditioning from those frozen states."""
    pytest.importorskip("tokenizers")
    from pixelscene.errors import ModelLoadError
    from pixelscene.transformer.minilm import MINILM_DIM, find_model_dir

    try:
        find_model_dir()
    except ModelLoadError as e:
        pytest.skip(str(e))
    tmp_path, vq, cfg = setup
    preset = micro_transformer_run(steps=60, learning_rate=0.01, eval_every=60)
    preset["transformer"].update(text_encoder="minilm", pooled_text=True)
    cfg.write_text(yaml.safe_dump(preset))
    result = run(tmp_path, vq, cfg, "minilm")
    assert result.last_eval["eval_loss"] < 2.0  # conditioned: ~log(4) = 1.39 nats, unconditioned ~4
    assert any((tmp_path / "train").glob("minilm_states_L12/states.npy"))
    conf = load_model_config(tmp_path / "minilm")
    assert conf.transformer.text_encoder == "minilm"
    model = ImageTransformer(conf.transformer, 512, 260, MINILM_DIM)
    load_weights(tmp_path / "minilm" / "transformer.safetensors", model)
    assert "text_encoder" not in model
    assert not (tmp_path / "minilm" / "tokenizer.json").exists()


def test_first_row_weight_weighs_the_first_row_and_keeps_the_mean():
    w = position_weights(260, 20, 8.0)
    assert w.shape == (260,) and abs(w.mean().item() - 1.0) < 1e-5
    assert abs(w[0].item() / w[-1].item() - 8.0) < 1e-5 and w[19].item() == w[0].item()
    assert w[20].item() == w[-1].item()
    # with uniform weights the weighted loss is the plain mean
    mx.random.seed(0)
    from pixelscene.config import TransformerConfig

    cfg = TransformerConfig(**micro_transformer_run()["transformer"], pooled_text=True)
    model = ImageTransformer(cfg, 512, 260)
    codes = mx.random.randint(0, 512, (2, 260))
    ids = mx.array(np.random.default_rng(0).integers(1, 64, (2, 12)).astype(np.int32))
    mask = mx.ones((2, 12), dtype=mx.bool_)
    model.eval()
    plain = sequence_loss(model, codes, ids, mask).item()
    assert abs(sequence_loss(model, codes, ids, mask, weights=mx.ones(260)).item() - plain) < 1e-5
    assert abs(sequence_loss(model, codes, ids, mask, weights=w).item() - plain) > 1e-4


def test_trains_with_a_first_row_weight(setup):
    tmp_path, vq, cfg = setup
    cfg.write_text(yaml.safe_dump(micro_transformer_run(first_row_weight=8.0)))
    result = run(tmp_path, vq, cfg, "weighted")
    assert result.step == 8 and np.isfinite(result.last_train["loss"])
    assert load_model_config(tmp_path / "weighted").train_transformer.first_row_weight == 8.0


def test_text_noise_scales_with_each_states_rms():
    mx.random.seed(0)
    states = mx.concatenate([mx.ones((1, 4, 384)), 10 * mx.ones((1, 4, 384))]).astype(mx.float16)
    noise = noisy_states(states, 0.5) - states.astype(mx.float32)
    rms = mx.sqrt(mx.mean(noise * noise, axis=-1))  # (2, 4)
    assert mx.allclose(rms[0], mx.full((4,), 0.5), atol=0.06).item()
    assert mx.allclose(rms[1], mx.full((4,), 5.0), atol=0.6).item()
    assert noisy_states(states, 0.0).dtype == mx.float32


def test_each_rank_gets_its_own_rows_of_the_one_process_text_noise():
    shape = (6, 3, 8)
    mx.random.seed(7)
    whole = shard_normal(shape, Shard(0, 1))
    halves = []
    for rank in (0, 1):
        mx.random.seed(7)  # every rank starts a step from the same random state
        halves.append(shard_normal(shape, Shard(rank, 2)))
    assert halves[0].shape == (3, 3, 8)
    assert mx.array_equal(mx.concatenate(halves), whole).item()
    assert not mx.allclose(halves[0], halves[1]).item()  # rank 1 does not repeat rank 0
    states = mx.ones(shape)
    assert mx.allclose(noisy_states(states, 0.5, whole) - 1.0, 0.5 * whole, atol=1e-5).item()


@pytest.fixture()
def synth_setup(tmp_path):
    """A 6-scene `pixelscene synth` dataset (so sprite coverage can be re-rendered) with a
    token cache of random codes, and a config training 2 steps with a 1-step warmup."""
    from pixelscene.data.synth import write_dataset

    data = tmp_path / "synth"
    write_dataset(data, 6, seed=5, captions=2)
    vq = tmp_path / "vq"
    save_model_config(vq, load_config("tiny"))
    write_weights(vq, encoder=0.0, decoder=0.0)
    names = sorted(p.name for p in (data / "images").iterdir())
    codes = np.random.default_rng(0).integers(0, 512, (len(names), 13, 20)).astype(np.int16)
    save_token_cache(data / "tokens.npz", TokenCache(codes, names, vqgan_fingerprint(vq)))
    cfg = tmp_path / "micro.yaml"
    cfg.write_text(
        yaml.safe_dump(micro_transformer_run(steps=2, warmup_steps=1, checkpoint_every=1))
    )
    return data, vq, cfg


def test_training_with_sprite_weights(synth_setup, tmp_path):
    data, vq, cfg = synth_setup
    micro = yaml.safe_load(cfg.read_text())
    micro["train_transformer"]["sprite_weight"] = 4.0
    cfg.write_text(yaml.safe_dump(micro))
    result = train_transformer(cfg, data, vq, tmp_path / "out", progress=False)
    assert result.step == 2 and np.isfinite(result.last_train["loss"])
    assert (data / "sprites_13x20.npz").is_file()  # coverage computed and cached


def test_init_from_starts_a_new_run_from_a_model_folder(synth_setup, tmp_path):
    data, vq, cfg = synth_setup
    train_transformer(cfg, data, vq, tmp_path / "first", progress=False)
    # warmup: the first step's learning rate is 0, so the checkpoint after it holds the
    # starting weights
    result = train_transformer(
        cfg, data, vq, tmp_path / "second", progress=False, init_from=tmp_path / "first",
        stop_after=1,
    )  # fmt: skip
    assert result.step == 1
    start = mx.load(str(tmp_path / "first" / "transformer.safetensors"))
    after = mx.load(str(tmp_path / "second" / CHECKPOINT_DIR / "transformer.safetensors"))
    assert start.keys() == after.keys()
    assert all(mx.array_equal(start[k].astype(mx.float32), after[k]).item() for k in start)
    tokenizers = [(tmp_path / d / "tokenizer.json").read_text() for d in ("first", "second")]
    assert tokenizers[0] == tokenizers[1]  # the caption ids the weights were trained on

    with pytest.raises(PixelsceneError, match="--init-from"):
        train_transformer(
            cfg, data, vq, tmp_path / "second", progress=False, resume=True,
            init_from=tmp_path / "first",
        )  # fmt: skip
    wider = yaml.safe_load(cfg.read_text())
    wider["transformer"]["embed_dim"] = 48
    cfg.write_text(yaml.safe_dump(wider))
    with pytest.raises(ModelLoadError, match="shape"):
        train_transformer(
            cfg, data, vq, tmp_path / "third", progress=False, init_from=tmp_path / "first"
        )


def test_training_on_held_out_combinations_is_flagged(synth_setup, tmp_path, caplog):
    from pixelscene.data.synth import heldout_images, is_heldout, valid_combinations

    data, vq, cfg = synth_setup
    assert heldout_images(data) == (0, 6)  # `synth` writes the train split by default
    train_transformer(cfg, data, vq, tmp_path / "clean", progress=False)
    assert "held out for evaluation" not in caplog.text

    held = next(c for c in valid_combinations() if is_heldout(c))
    lines = (data / "attributes.jsonl").read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), **held})
    (data / "attributes.jsonl").write_text("\n".join(lines) + "\n")
    assert heldout_images(data) == (1, 6)
    train_transformer(cfg, data, vq, tmp_path / "leaky", progress=False)
    assert "1 of 6 training images show attribute combinations held out" in caplog.text


def test_time_budget_counts_across_resumes(setup):
    tmp_path, vq, cfg = setup
    first = run(tmp_path, vq, cfg, "budget", stop_after=3)
    state = json.loads((tmp_path / "budget" / CHECKPOINT_DIR / "meta.json").read_text())
    assert first.step == 3 and state["wall_s"] > 0
    again = run(tmp_path, vq, cfg, "budget", resume=True, max_minutes=state["wall_s"] / 120)
    assert again.budget_reached and not again.interrupted and again.step == 3
    assert (tmp_path / "budget" / "transformer.safetensors").is_file()
    done = run(tmp_path, vq, cfg, "budget", resume=True, max_minutes=60)
    assert done.step == 8 and not done.budget_reached
