"""The categorical image tokenizer: FSQ codes, heads that paint only DAC colours, save/load,
and its trainer (loss goes down, resume is exact)."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from PIL import Image

from pixelscene.config import Config
from pixelscene.data.datasets import to_float
from pixelscene.data.vga import DAC_LEVELS
from pixelscene.errors import PixelsceneError
from pixelscene.image_tokenizers import load_tokenizer
from pixelscene.imagetok import FSQ, ImageTokenizer, color_levels, load_image_tokenizer
from pixelscene.imagetok.heads import MixtureHead, SoftmaxHead
from pixelscene.imagetok.palette import EMPTY, image_palette, levels_of
from pixelscene.testing import micro_tokenizer_config, micro_tokenizer_run
from pixelscene.train.imagetok import TokenizerTrainer, train_tokenizer


def pixel_art(folder, count, seed=0):
    """320x200 images of 8x8 blocks in a few DAC colours, with a checkerboard dither."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        palette = DAC_LEVELS[rng.integers(0, 64, size=(4, 3))]
        blocks = rng.integers(0, 4, size=(25, 40))
        img = palette[np.repeat(np.repeat(blocks, 8, 0), 8, 1)]
        checker = (np.add.outer(np.arange(200), np.arange(320)) % 2).astype(bool)
        img[:40][checker[:40]] = palette[0]
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{i:06d}.png")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return pixel_art(tmp_path_factory.mktemp("data") / "images", 6)


def test_fsq_codes_round_trip_and_cover_the_grid():
    fsq = FSQ([5, 4, 3])
    assert fsq.codebook_size == 60
    z = mx.random.normal((4000, 3)) * 3
    q = fsq.quantize(z)
    codes = fsq.to_codes(q)
    assert mx.array_equal(fsq.from_codes(codes), q).item()
    used = np.unique(np.array(codes))
    assert used.min() >= 0 and used.max() < 60 and len(used) == 60
    grid = fsq.from_codes(mx.arange(60))
    assert len({tuple(r) for r in np.array(grid).tolist()}) == 60


def test_fsq_passes_gradients_straight_through():
    fsq = FSQ([7, 5])
    g = mx.grad(lambda z: fsq.quantize(z).sum())(mx.zeros((2, 2)))
    assert (np.array(g) > 0).all()


@pytest.mark.parametrize("head", ["mixture", "softmax"])
def test_decode_paints_only_dac_colours(head):
    cfg = micro_tokenizer_config(head=head)
    model = ImageTokenizer(cfg)
    mx.eval(model.parameters())
    images = mx.random.uniform(-1, 1, (2, 200, 320, 3))
    codes = model.encode(images)
    assert codes.shape == (2, 26, 40) and codes.dtype == mx.int32
    assert 0 <= int(codes.min()) and int(codes.max()) < cfg.codebook_size
    pixels = np.rint((np.array(model.decode(codes)) + 1) * 127.5).astype(np.int64)
    assert pixels.shape == (2, 200, 320, 3)
    assert np.isin(pixels, DAC_LEVELS).all()


def test_several_codes_per_position():
    model = ImageTokenizer(micro_tokenizer_config(patch_size=16, codes_per_position=3))
    codes = model.encode(mx.zeros((1, 200, 320, 3)))
    assert codes.shape == (1, 13, 20, 3)
    assert model.decode(codes).shape == (1, 200, 320, 3)


def test_color_levels_are_the_nearest_dac_level():
    levels = np.arange(64)
    images = mx.array(to_float(DAC_LEVELS[levels].reshape(1, 1, 64, 1)))
    assert np.array_equal(np.array(color_levels(images)).reshape(-1), levels)


def test_mixture_head_likelihood_and_painting():
    head = MixtureHead(features=4, levels=64, components=2)
    target = mx.array([[10, 20, 63]])
    # candidate 0: centred on the target, sharp; candidate 1: elsewhere, unlikely
    half = 63 / 2
    sharp = [(10 - half) / half, (20 - half) / half, (63 - half) / half]
    params = mx.array([[[4.0, *sharp, -5, -5, -5], [-4.0, 0, 0, 0, 0, 0, 0]]])
    assert float(head.nll(params, target)) < 0.01
    assert np.array(head.paint(params)).tolist() == [[10, 20, 63]]
    far = mx.array([[40, 40, 0]])
    assert float(head.nll(params, far)) > 3.0
    # probabilities over all 64^3 colours would sum to 1: check one channel's 64 bins
    one = mx.array([[[0.0, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5], [-9.0, 0, 0, 0, 0, 0, 0]]])
    levels = mx.stack([mx.arange(64)] * 3, axis=-1)
    nll = [float(head.nll(one, levels[i : i + 1])) * 3 for i in range(64)]
    assert sum(np.exp(-np.array(nll) / 3)) == pytest.approx(1.0, abs=0.02)


def test_softmax_head_paints_the_argmax():
    head = SoftmaxHead(features=4, levels=64)
    params = mx.zeros((1, 3, 64))
    params[0, 0, 5] = 9.0
    params[0, 1, 63] = 9.0
    assert np.array(head.paint(params)).tolist() == [[5, 63, 0]]
    assert float(head.nll(params, mx.array([[5, 63, 0]]))) < float(
        head.nll(params, mx.array([[6, 62, 1]]))
    )


def test_training_learns_and_writes_a_loadable_model(data, tmp_path):
    out = tmp_path / "model"
    cfg = micro_tokenizer_run(steps=40, learning_rate=1e-2, eval_every=40, checkpoint_every=20)
    result = train_tokenizer(cfg, [data], out, eval_dir=data, progress_bar=False)
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert result.step == 40 and not result.interrupted
    assert np.mean([r["ce"] for r in rows[-5:]]) < 0.6 * np.mean([r["ce"] for r in rows[:5]])
    ev = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    assert ev["off_grid_pixels"] == 0 and ev["images"] == 2
    assert json.loads((out / "config.json").read_text())["image_tokenizer"] == "categorical"
    model = load_tokenizer(out)
    assert isinstance(model, ImageTokenizer) and model.codebook_size == 60
    weights = mx.load(str(out / "tokenizer.safetensors"))
    assert all(v.dtype == mx.float16 for v in weights.values())
    images = mx.array(to_float(np.asarray(Image.open(data / "000000.png"))[None]))
    again = load_image_tokenizer(out)
    assert mx.array_equal(model.encode(images), again.encode(images)).item()


def test_resume_continues_exactly(data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_tokenizer(micro_tokenizer_run(steps=8), [data], straight, progress_bar=False)
    first = train_tokenizer(
        micro_tokenizer_run(steps=8), [data], split, stop_after=5, progress_bar=False
    )
    assert first.interrupted and first.step == 5
    with pytest.raises(PixelsceneError, match="--resume"):
        train_tokenizer(micro_tokenizer_run(), [data], split, progress_bar=False)
    train_tokenizer(None, [data], split, resume=True, progress_bar=False)
    rows = [
        {r["step"]: r for r in map(json.loads, (d / "train.jsonl").read_text().splitlines())}
        for d in (straight, split)
    ]
    for step in (6, 7, 8):
        assert rows[1][step]["ce"] == pytest.approx(rows[0][step]["ce"], rel=1e-4), step


def test_mixing_folders_needs_one_weight_each(data, tmp_path):
    with pytest.raises(PixelsceneError, match="data-weights"):
        train_tokenizer(
            micro_tokenizer_run(),
            [data, data],
            tmp_path / "m",
            data_weights=[1.0],
            progress_bar=False,
        )


def test_config_rejects_a_patch_that_does_not_tile():
    with pytest.raises(PixelsceneError, match="patch_size"):
        Config.from_dict({"tokenizer": {"patch_size": 12}})


def test_heads_are_modules_with_parameters():
    assert isinstance(MixtureHead(4, 64, 3), nn.Module)


def test_image_palette_keeps_the_most_frequent_colours_by_luminance():
    levels = np.zeros((4, 8, 3), dtype=np.uint8)
    levels[:, :4] = (63, 63, 63)  # 16 white
    levels[:2, 4:] = (63, 0, 0)  # 8 red
    levels[2:, 4:7] = (0, 0, 10)  # 6 dark blue
    levels[3, 7] = (0, 0, 11)  # 1 almost the same blue: dropped at size 3
    levels[2, 7] = (0, 63, 0)  # 1 green: dropped at size 3
    palette, index = image_palette(levels, 3)
    assert palette.tolist() == [[0, 0, 10], [63, 0, 0], [63, 63, 63]]
    assert index[0, 0] == 2 and index[0, 5] == 1 and index[3, 5] == 0
    assert index[3, 7] == 0  # painted as its nearest kept colour
    full, idx = image_palette(levels, 8)
    assert (full[5:] == EMPTY).all() and len({tuple(c) for c in full[:5].tolist()}) == 5
    assert np.array_equal(full[idx], levels.astype(np.int32))


def test_palette_tokens_round_trip_and_paint_only_palette_colours():
    cfg = micro_tokenizer_config(palette_size=16)
    model = ImageTokenizer(cfg)
    mx.eval(model.parameters())
    rng = np.random.default_rng(0)
    colours = DAC_LEVELS[rng.integers(0, 64, size=(6, 3))]
    img = colours[rng.integers(0, 6, size=(200, 320))].astype(np.uint8)
    tokens = model.encode(mx.array(to_float(img[None])))
    h, w = cfg.grid_size
    assert tokens.shape == (1, 3 * 16 + h * w)
    assert model.vocab_size == cfg.codebook_size + 65
    palette, codes = model.split(tokens)
    assert mx.array_equal(model.join(palette, codes), tokens).item()
    kept = {tuple(c) for c in np.array(palette[0]).tolist() if c[0] >= 0}
    assert kept == {tuple(c) for c in levels_of(colours).tolist()}
    painted = np.array(model.decode_levels(tokens))[0].reshape(-1, 3)
    assert {tuple(c) for c in painted.tolist()} <= kept


def test_palette_training_runs_and_learns(data, tmp_path):
    cfg = micro_tokenizer_run(steps=60, learning_rate=1e-2, eval_every=60, loss_pixels=1.0)
    cfg.tokenizer = micro_tokenizer_config(palette_size=8, dim=32, fsq_levels=[8, 8, 8])
    out = tmp_path / "pal"
    train_tokenizer(cfg.validate(), [data], out, eval_dir=data, progress_bar=False)
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    # 4 colours a pixel: ln 4 = 1.386 nats at chance, which an untrained head stays at
    assert np.mean([r["ce"] for r in rows[:3]]) > 1.33
    assert np.mean([r["ce"] for r in rows[-5:]]) < 1.30
    ev = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    assert ev["off_grid_pixels"] == 0 and 0 < ev["codebook_usage"] <= 1
    assert load_tokenizer(out).cfg.palette_size == 8


def test_init_from_loads_what_fits_and_keeps_new_parameters(data, tmp_path):
    first = tmp_path / "first"
    cfg = micro_tokenizer_run(steps=2)
    train_tokenizer(cfg, [data], first, progress_bar=False)
    wider = micro_tokenizer_run(steps=1)
    wider.tokenizer = micro_tokenizer_config(pixel_features=12)  # the head no longer fits
    out = tmp_path / "second"
    train_tokenizer(wider.validate(), [data], out, init_from=first, progress_bar=False)
    old = mx.load(str(first / "tokenizer.safetensors"))
    trainer = TokenizerTrainer(wider, tmp_path / "x", init_from=first)
    params = dict(tree_flatten(trainer.model.parameters()))
    same = "encoder.proj_in.weight"
    assert np.allclose(np.array(params[same]), np.array(old[same].astype(mx.float32)))
    assert params["decoder.head.proj.weight"].shape != old["decoder.head.proj.weight"].shape
    with pytest.raises(PixelsceneError, match="init-from"):
        train_tokenizer(cfg, [data], tmp_path / "y", init_from=tmp_path / "none")
    with pytest.raises(PixelsceneError, match="--resume"):
        train_tokenizer(None, [data], out, resume=True, init_from=first)


def test_sprite_weighted_training_reads_the_renderers_masks(data, tmp_path):
    from pixelscene.data.sprites import scene_sprites, synth_records
    from pixelscene.data.synth import write_dataset
    from pixelscene.train.imagetok import CropPool

    scenes = tmp_path / "scenes"
    write_dataset(scenes, 4, seed=3, captions=1)
    pool = CropPool([scenes, data], [1.0, 1.0], [4, 4], palette_size=8, sprites=True)
    assert pool.masks[1] is None  # a folder without attributes.jsonl has no masks
    records = synth_records(scenes)
    names = sorted(records)
    expect = np.pad(np.stack([scene_sprites(records[n]) for n in names]), [(0, 0), (4, 4), (0, 0)])
    assert np.array_equal(pool.masks[0], expect) and expect.any()
    assert (scenes / "sprite_masks.npz").is_file()  # cached for the next run
    crops, _, _, sprites = pool.batch(8, 32, np.random.default_rng(0))
    assert sprites.shape == (8, 32, 32) and sprites.dtype == bool

    cfg = micro_tokenizer_run(steps=3, loss_pixels=1.0)
    cfg.tokenizer = micro_tokenizer_config(palette_size=8)
    _, palettes, indices, _ = pool.batch(8, 32, np.random.default_rng(0))
    half = np.zeros((8, 32, 32), bool)
    half[:4] = True  # the first four crops "are sprites"

    def first_loss(weight, mask):
        trainer = TokenizerTrainer(cfg, tmp_path / f"t{weight}{mask.sum()}", seed=0)
        trainer.tc.sprite_weight = weight
        x = mx.array(to_float(crops))
        return trainer.train_step(x, np.random.default_rng(1), palettes, indices, mask)["ce"]

    plain = first_loss(0.0, half)
    assert first_loss(50.0, np.ones_like(half)) == pytest.approx(plain, rel=1e-5)  # all alike
    assert first_loss(50.0, half) != pytest.approx(plain, rel=1e-4)  # sprites count more

    run = micro_tokenizer_run(steps=2, sprite_weight=4.0, eval_every=2)
    run.tokenizer = micro_tokenizer_config(palette_size=8)
    out = tmp_path / "o"
    result = train_tokenizer(
        run.validate(), [scenes, data], out, eval_dir=scenes, progress_bar=False
    )
    assert result.step == 2 and np.isfinite(result.last_train["ce"])
    assert 0 <= result.last_eval["pixel_accuracy_sprites"] <= 1  # scene evals know sprites
    with pytest.raises(PixelsceneError, match="palette_size"):
        train_tokenizer(micro_tokenizer_run(sprite_weight=1.0), [scenes], tmp_path / "n")


def test_init_from_another_fsq_grid_is_said(data, tmp_path, caplog):
    first = tmp_path / "first"
    train_tokenizer(micro_tokenizer_run(steps=1), [data], first, progress_bar=False)
    other = micro_tokenizer_run(steps=1)
    other.tokenizer = micro_tokenizer_config(fsq_levels=[4, 5, 3])  # same shapes, other grid
    with caplog.at_level("WARNING"):
        TokenizerTrainer(other.validate(), tmp_path / "x", init_from=first)
    assert "FSQ levels [5, 4, 3]; this run uses [4, 5, 3]" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        TokenizerTrainer(micro_tokenizer_run(steps=1), tmp_path / "y", init_from=first)
    assert "FSQ levels" not in caplog.text
