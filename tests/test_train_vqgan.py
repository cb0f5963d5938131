"""VQGAN trainer on a micro config: loss goes down, resume is exact, outputs form a model."""

import json

import numpy as np
import pytest
from PIL import Image

from pixelscene.errors import PixelsceneError
from pixelscene.testing import micro_vqgan_run
from pixelscene.train.vqgan import random_crops, train_vqgan
from pixelscene.vqgan import load_vqgan


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
    cfg = micro_vqgan_run(
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
    train_vqgan(micro_vqgan_run(steps=8), data, straight, progress_bar=False)
    first = train_vqgan(micro_vqgan_run(steps=8), data, split, stop_after=5, progress_bar=False)
    assert first.interrupted and first.step == 5
    with pytest.raises(PixelsceneError, match="--resume"):
        train_vqgan(micro_vqgan_run(), data, split, progress_bar=False)
    train_vqgan(None, data, split, resume=True, progress_bar=False)
    a = {r["step"]: r for r in train_losses(straight)}
    b = {r["step"]: r for r in train_losses(split)}
    for step in (6, 7, 8):
        for key in ("loss", "l1", "vq", "d"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-6), (step, key)


def test_ctrl_c_saves_a_checkpoint_and_resume_goes_on(data, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from pixelscene import model_io

    cfg = micro_vqgan_run(steps=100000, log_every=1)
    model_io.save_model_config(tmp_path / "cfg", cfg)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pixelscene", "train", "vqgan", "--data", str(data)]
    cmd += ["--out", str(out), "--config", str(tmp_path / "cfg" / "config.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            log = out / "train.jsonl"
            if log.is_file() and len(log.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    meta = json.loads((out / "checkpoint" / "meta.json").read_text())
    stopped = meta["step"]
    assert stopped >= 3 and stopped == train_losses(out)[-1]["step"]
    result = train_vqgan(None, data, out, resume=True, steps=stopped + 2, progress_bar=False)
    assert result.step == stopped + 2 and not result.interrupted


def test_codebook_starts_on_encoder_outputs_and_dead_codes_restart(data):
    import mlx.core as mx

    from pixelscene.data.datasets import ImageDataset
    from pixelscene.train.vqgan import RESTART_WINDOW, VQGANTrainer
    from pixelscene.vqgan.quantizer import l2_normalize

    trainer = VQGANTrainer(micro_vqgan_run(steps=1000), "/nonexistent")
    ds = ImageDataset(data)
    images = np.stack([ds.load_uint8(i) for i in range(2)])
    trainer.init_codebook(images)
    from pixelscene.data.datasets import to_float

    z = l2_normalize(trainer.model.encoder(trainer.model.pad(mx.array(to_float(images)))))
    z = np.array(z).reshape(-1, 8)
    book = np.array(trainer.model.quantizer.codes())
    # every code is an encoder output (plus 1% noise, renormalised)
    nearest = np.min(np.linalg.norm(book[:, None] - z[None], axis=-1), axis=1)
    assert nearest.max() < 0.05

    # one training step gives the codebook Adam moments; then codes 0..9 go unused
    trainer.train_step(mx.array(to_float(images[:, :32, :32])))
    moments = trainer.opt_g.state["quantizer"]["codebook"]
    assert any(float(mx.abs(v).sum()) > 0 for k, v in moments.items() if k != "step")
    trainer.step = RESTART_WINDOW
    trainer.counts[:] = 100
    trainer.counts[:10] = 0
    before = np.array(trainer.model.quantizer.codebook)
    candidates = mx.array(np.random.default_rng(0).normal(size=(4, 2, 2, 8)), mx.float32)
    assert trainer.maybe_restart_codes(candidates) == 10
    after = np.array(trainer.model.quantizer.codebook)
    assert not np.allclose(after[:10], before[:10]) and np.array_equal(after[10:], before[10:])
    for key, v in trainer.opt_g.state["quantizer"]["codebook"].items():
        if key != "step":
            assert float(mx.abs(v[:10]).sum()) == 0.0, key  # moments of restarted codes reset
    assert trainer.counts.sum() == 0  # a new counting window


def test_adaptive_gan_weight_is_the_gradient_norm_ratio(data):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from pixelscene.data.datasets import ImageDataset, to_float
    from pixelscene.train.vqgan import VQGANTrainer

    trainer = VQGANTrainer(micro_vqgan_run(disc_weight=0.3), "/nonexistent")
    x = mx.array(to_float(ImageDataset(data).load_uint8(0)[None, :32, :32]))
    model = trainer.model
    w_name = "decoder.conv_out.weight"

    def grad_norm(loss_of_recon):
        def loss(m):
            z_q, _, _ = m.quantizer(m.encoder(x))
            return loss_of_recon(m.decoder(z_q))

        _, grads = nn.value_and_grad(model, loss)(model)
        grads = dict(tree_flatten(grads))
        return float(mx.linalg.norm(grads[w_name].reshape(-1)))

    rec = grad_norm(lambda r: trainer._rec_loss(r, x)[0])
    gan = grad_norm(lambda r: -mx.mean(trainer.disc(r)))
    expected = 0.3 * rec / (gan + 1e-4)
    assert float(trainer._adaptive_weight(x)) == pytest.approx(expected, rel=1e-3)


def test_unreadable_images_are_skipped_in_evaluation_too(tmp_path, caplog):
    folder = blocky_images(tmp_path / "d" / "images", 3)
    (folder / "000000.png").write_bytes(b"not a png")  # the first evaluation image
    result = train_vqgan(micro_vqgan_run(steps=2), folder, tmp_path / "m", progress_bar=False)
    assert result.step == 2 and result.last_eval["images"] == 2
    assert "000000.png" in caplog.text
    (tmp_path / "file").write_text("x")
    with pytest.raises(PixelsceneError, match="exists and is not a folder"):
        train_vqgan(micro_vqgan_run(steps=2), folder, tmp_path / "file", progress_bar=False)


def test_time_budget_counts_across_resumes(data, tmp_path):
    out = tmp_path / "run"
    first = train_vqgan(micro_vqgan_run(steps=8), data, out, stop_after=3, progress_bar=False)
    spent = json.loads((out / "checkpoint" / "meta.json").read_text())["wall_s"]
    assert first.step == 3 and spent > 0
    # a budget already spent by the first session: the resumed run trains no further step,
    # yet ends normally with the model evaluated and exported
    again = train_vqgan(None, data, out, resume=True, max_minutes=spent / 120, progress_bar=False)
    assert again.budget_reached and not again.interrupted and again.step == 3
    assert again.last_eval["step"] == 3 and load_vqgan(out).cfg.codebook_size == 32
    assert json.loads((out / "checkpoint" / "meta.json").read_text())["wall_s"] >= spent
    done = train_vqgan(None, data, out, resume=True, max_minutes=60, progress_bar=False)
    assert done.step == 8 and not done.budget_reached
    with pytest.raises(PixelsceneError, match="--max-minutes must be > 0"):
        train_vqgan(micro_vqgan_run(), data, tmp_path / "x", max_minutes=0, progress_bar=False)
