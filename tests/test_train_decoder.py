"""Decoder fine-tuning: loss goes down, the codes stay the same, resume is exact."""

import json

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from pixelscene.data.datasets import to_float
from pixelscene.data.token_cache import vqgan_fingerprint
from pixelscene.errors import PixelsceneError
from pixelscene.testing import make_random_model_dir
from pixelscene.testing import micro_decoder_settings as settings
from pixelscene.train.decoder import finetune_decoder
from pixelscene.vqgan import load_vqgan


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder")
    model = make_random_model_dir(root / "model")
    data = root / "data"
    (data / "images").mkdir(parents=True)
    with open(data / "captions.jsonl", "w") as f:
        for i in range(6):
            rng = np.random.default_rng(i)
            blocks = rng.integers(0, 4, size=(13, 20, 1)) * 60 + rng.integers(0, 60, size=(1, 1, 3))
            img = np.repeat(np.repeat(blocks, 16, 0), 16, 1)[:200].astype(np.uint8)
            Image.fromarray(img).save(data / "images" / f"{i:06d}.png")
            f.write(json.dumps({"image": f"{i:06d}.png", "caption": "hills"}) + "\n")
    return model, data


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights(folder):
    return {k: np.array(v) for k, v in mx.load(str(folder / "vqgan.safetensors")).items()}


def test_loss_falls_and_only_the_decoder_changes(setup, tmp_path):
    model, data = setup
    out = tmp_path / "tuned"
    result = finetune_decoder(model, data, out, settings(steps=30), progress_bar=False)
    assert result.step == 30 and not result.interrupted
    losses = [r["loss"] for r in rows(out / "train.jsonl")]
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])  # random codes: the mean colours
    evals = rows(out / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 30] and evals[1]["psnr"] > evals[0]["psnr"]

    before, after = weights(model), weights(out)
    assert before.keys() == after.keys()
    for name in before:
        same = np.array_equal(before[name], after[name])
        assert same != name.startswith("decoder."), name
    assert vqgan_fingerprint(out) == vqgan_fingerprint(model)
    images = mx.array(
        to_float(
            np.stack([np.array(Image.open(p)) for p in sorted((data / "images").iterdir())[:2]])
        )
    )
    old, new = load_vqgan(model), load_vqgan(out)
    assert np.array_equal(np.array(old.encode(images)), np.array(new.encode(images)))
    assert (out / "transformer.safetensors").is_file()  # a complete model folder


def test_resume_continues_exactly_through_the_gan_phase(setup, tmp_path):
    model, data = setup
    straight, split = tmp_path / "straight", tmp_path / "split"
    gan = settings(gan_weight=0.5, disc_start=2)
    finetune_decoder(model, data, straight, gan, progress_bar=False)
    first = finetune_decoder(model, data, split, gan, stop_after=3, progress_bar=False)
    assert first.interrupted and first.step == 3
    with pytest.raises(PixelsceneError, match="--resume"):
        finetune_decoder(model, data, split, settings(), progress_bar=False)
    finetune_decoder(None, data, split, resume=True, progress_bar=False)
    a = {r["step"]: r for r in rows(straight / "train.jsonl")}
    b = {r["step"]: r for r in rows(split / "train.jsonl")}
    assert set(a) == set(b) == set(range(1, 7))
    assert "d" not in a[2] and "d" in a[3]  # the discriminator joins at disc_start
    for step in (4, 5, 6):
        for key in ("loss", "l1", "g", "d", "gan_w"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-7), (step, key)


def test_bad_settings_and_folders_are_named(setup, tmp_path):
    model, data = setup
    with pytest.raises(PixelsceneError, match="batch-size must be positive"):
        finetune_decoder(model, data, tmp_path / "x", settings(batch_size=0))
    with pytest.raises(PixelsceneError, match="new folder"):
        finetune_decoder(model, data, model, settings())
    with pytest.raises(PixelsceneError, match="loss weights"):
        finetune_decoder(model, data, tmp_path / "y", settings(l1_weight=0.0, l2_weight=0.0))


def test_time_budget_counts_across_resumes(setup, tmp_path):
    import json

    model, data = setup
    out = tmp_path / "run"
    first = finetune_decoder(model, data, out, settings(), stop_after=2, progress_bar=False)
    spent = json.loads((out / "checkpoint" / "meta.json").read_text())["wall_s"]
    assert first.step == 2 and spent > 0
    again = finetune_decoder(
        None, data, out, resume=True, max_minutes=spent / 120, progress_bar=False
    )
    assert again.budget_reached and not again.interrupted and again.step == 2
    done = finetune_decoder(None, data, out, resume=True, max_minutes=60, progress_bar=False)
    assert done.step == 6 and not done.budget_reached
