"""Reconstruction metrics and the `eval vqgan` command on a tiny model folder."""

import json

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from pixelscene import cli, model_io
from pixelscene.config import Config, VQGANConfig
from pixelscene.eval.vqgan_metrics import patch_mean, psnr
from pixelscene.vqgan import VQGAN


def test_psnr_known_values():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] += 1  # mse 1 -> 48.13 dB
    out = psnr(a, b)
    assert out[0] == pytest.approx(10 * np.log10(255**2), abs=1e-9) and out[1] == 100.0


def test_patch_mean_handles_partial_edge_patches():
    img = np.zeros((1, 200, 320, 3), np.uint8)
    img[:, 192:] = 90  # the last, partial 16-row band (8 rows) is its own patch
    img[:, :16, :16] = [[0], [32]] * 8  # alternating rows average to 16
    out = patch_mean(img, 16)
    assert out.shape == img.shape
    assert (out[:, 192:] == 90).all() and (out[:, 176:192] == 0).all()
    assert (out[:, :16, :16] == 16).all()
    np.testing.assert_array_equal(patch_mean(img, 1), img)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    cfg = Config(
        name="micro",
        vqgan=VQGANConfig(
            hidden_channels=8,
            channel_multipliers=[1, 1, 2, 2],
            num_res_blocks=1,
            codebook_size=64,
            codebook_dim=8,
            patch_size=4,
        ),
    ).validate()
    model_io.save_model_config(d, cfg)
    model_io.save_weights(d / "vqgan.safetensors", VQGAN(cfg.vqgan))
    return d


def test_eval_command_prints_one_json_object(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(3):
        img = rng.integers(0, 255, (200, 320, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / "images" / f"{i:06d}.png")
    rc = cli.main(
        [
            "eval",
            "vqgan",
            "--model",
            str(model_dir),
            "--data",
            str(tmp_path),
            "--json",
            "--limit",
            "2",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 2
    assert set(result) >= {"psnr", "psnr_patch16", "psnr_patch4", "codebook_usage", "perplexity"}
    assert 0 < result["codebook_usage"] <= 1 and result["perplexity"] >= 1
    # random noise: 4x4 means fit better than 16x16 means
    assert result["psnr_patch4"] > result["psnr_patch16"]


def test_eval_command_bad_folder_is_one_line_error(model_dir, tmp_path, capsys):
    rc = cli.main(["eval", "vqgan", "--model", str(model_dir), "--data", str(tmp_path / "none")])
    assert rc == 2 and "error" in capsys.readouterr().err
    mx.clear_cache()
