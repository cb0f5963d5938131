"""VQGAN trainer on a micro config: loss goes down, resume is exact, outputs form a model."""

import json

import numpy as np
import pytest
from PIL import Image

from pixelscene.config import Config, VQGANConfig, VQGANTrainConfig
from pixelscene.errors import PixelsceneError
from pixelscene.train.vqgan import random_crops, train_vqgan
from pixelscene.vqgan import load_vqgan


def micro_config(**train) -> Config:
    vq = VQGANConfig(
        hidden_channels=8,
        channel_multipliers=[1, 1, 2, 2],
        num_res_blocks=1,
        codebook_size=32,
        codebook_dim=8,
        disc_channels=8,
        disc_layers=2,
        patch_size=4,
    )
    defaults = dict(
        batch_size=2,
        crop_size=32,
        steps=6,
        warmup_steps=2,
        learning_rate=3e-3,
        disc_start=4,
        eval_images=2,
        log_every=1,
        sample_every=100,
        eval_every=100,
        checkpoint_every=100,
    )
    defaults.update(train)
    return Config(name="micro", vqgan=vq, train_vqgan=VQGANTrainConfig(**defaults)).validate()


def blocky_images(folder, count, seed=0):
    """Random 320x200 images made of 16x16 flat-colour blocks (pixel-art-like)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        blocks = rng.integers(0, 4, size=(13, 20, 1)) * 80 + rng.integers(0, 40, size=(1, 1, 3))
        img = np.repeat(np.repeat(blocks, 16, 0), 16, 1)[:200].astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:06d}.png")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return blocky_images(tmp_path_factory.mktemp("data") / "images", 6)


def train_losses(out):
    return [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]


def test_random_crops_are_windows_of_the_padded_image():
    img = np.arange(200 * 320 * 3, dtype=np.int64).reshape(1, 200, 320, 3) % 251
    img = img.astype(np.uint8)
    crops = random_crops(img, 32, [4, 4], np.random.default_rng(0))
    padded = np.pad(img, [(0, 0), (4, 4), (0, 0), (0, 0)], mode="edge")
    windows = [
        (y, x)
        for y in range(208 - 31)
        for x in range(320 - 31)
        if np.array_equal(padded[0, y : y + 32, x : x + 32], crops[0])
    ]
    assert crops.shape == (1, 32, 32, 3) and windows


def test_training_reduces_loss_and_writes_a_model(tmp_path):
    data = tmp_path / "data" / "images"
    data.mkdir(parents=True)
    for i, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 60)]):
        Image.new("RGB", (320, 200), colour).save(data / f"{i:06d}.png")
    out = tmp_path / "model"
    cfg = micro_config(
        steps=40,
        batch_size=4,
        disc_start=37,
        eval_every=40,
        sample_every=40,
        checkpoint_every=20,
        learning_rate=1e-2,
    )
    result = train_vqgan(cfg, data, out, eval_dir=data, progress_bar=False)
    losses = train_losses(out)
    first = np.mean([r["l1"] for r in losses[:5]])
    last = np.mean([r["l1"] for r in losses[-5:]])
    assert result.step == 40 and not result.interrupted
    assert last < 0.5 * first
    assert "d" in losses[-1] and "gan_w" in losses[-1]  # the GAN phase ran
    ev = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert ev[-1]["step"] == 40 and 0 < ev[-1]["codebook_usage"] <= 1 and ev[-1]["images"] == 2
    assert (out / "samples" / "step_000040.png").is_file()
    model = load_vqgan(out)  # config.json + float16 vqgan.safetensors
    assert model.cfg.codebook_size == 32


def test_resume_continues_exactly(data, tmp_path):
    straight = tmp_path / "straight"
    split = tmp_path / "split"
    # crosses disc_start and a checkpoint between the two halves
    train_vqgan(micro_config(steps=8), data, straight, progress_bar=False)
    first = train_vqgan(micro_config(steps=8), data, split, stop_after=5, progress_bar=False)
    assert first.interrupted and first.step == 5
    with pytest.raises(PixelsceneError, match="--resume"):
        train_vqgan(micro_config(), data, split, progress_bar=False)
    train_vqgan(None, data, split, resume=True, progress_bar=False)
    a = {r["step"]: r for r in train_losses(straight)}
    b = {r["step"]: r for r in train_losses(split)}
    for step in (6, 7, 8):
        for key in ("loss", "l1", "vq", "d"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-6), (step, key)
