"""Reconstruction metrics and the `eval vqgan` command on a tiny model folder."""

import json

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from pixelscene import cli, model_io
from pixelscene.config import Config
from pixelscene.data.vga import DAC_LEVELS
from pixelscene.errors import ModelLoadError
from pixelscene.eval.vqgan_metrics import evaluate_vqgan, patch_mean, patch_mode, psnr
from pixelscene.image_tokenizers import load_tokenizer
from pixelscene.testing import micro_vqgan_config
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


def test_patch_mode_paints_each_patch_in_its_commonest_colour():
    red, blue, green = (252, 0, 0), (0, 0, 252), (0, 252, 0)
    img = np.zeros((1, 10, 12, 3), np.uint8)
    img[0, :4, :4] = red
    img[0, 0, :3] = blue  # 3 blue, 13 red: red
    img[0, :4, 4:8] = blue
    img[0, :2, 4:8] = green  # 8 green, 8 blue: the tie goes to the smaller 0xRRGGBB, blue
    img[0, 8:, 8:] = green
    img[0, 9, 11] = red  # the 2x4 edge patch: 7 green, 1 red
    out = patch_mode(img, 4)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[0, :4, :4] == red).all() and (out[0, :4, 4:8] == blue).all()
    assert (out[0, 8:, 8:] == green).all() and (out[0, 4:8] == 0).all()
    np.testing.assert_array_equal(patch_mode(img, 1), img)


class FakeTokenizer:
    """Encodes to zeros (B, 2, 2, 3); decodes to the last encoded images, then `edit`s them."""

    codebook_size = 8

    def __init__(self, edit=lambda images: images):
        self.edit = edit

    def encode(self, images):
        self.images = np.array(images)
        return mx.zeros((len(self.images), 2, 2, 3), mx.int32)

    def decode(self, codes):
        return mx.array(self.edit(self.images.copy()))


def dac_images(n):
    """uint8 images whose channels are all on the VGA DAC's levels."""
    rng = np.random.default_rng(1)
    return list(DAC_LEVELS[rng.integers(0, 64, (n, 200, 320, 3))])


def test_identity_model_is_exact_and_changed_pixels_are_counted():
    images = dac_images(3)
    exact = evaluate_vqgan(FakeTokenizer(), images, batch_size=2)
    assert exact["images"] == 3 and exact["pixel_accuracy"] == 1.0 and exact["psnr"] == 100.0
    assert exact["off_grid_pixels"] == 0
    assert exact["codebook_usage"] == 1 / 8  # (B, 2, 2, 3) codes, all 0, counted flat
    assert 1000 < exact["distinct_colours"] <= 64000
    assert exact["pixel_accuracy_sprites"] is None and exact["psnr_sprites"] is None

    def edit(x):  # to_float's 1/127.5 steps: +2/127.5 moves a channel 2 levels off the grid
        x[:, :10, :32, 0] = np.where(x[:, :10, :32, 0] > 0, -1.0, 1.0)  # 320 moved, on grid
        x[:, 50, :100, 1] += 2 / 127.5 * np.where(x[:, 50, :100, 1] < 0.5, 1, -1)  # 100 off grid
        return x

    changed = evaluate_vqgan(FakeTokenizer(edit), images, batch_size=2)
    assert changed["pixel_accuracy"] == pytest.approx(1 - 420 / 64000)
    assert changed["off_grid_pixels"] == 3 * 100


def test_sprite_figures_over_the_masked_pixels_only():
    images = dac_images(2)
    masks = [np.zeros((200, 320), bool) for _ in images]
    masks[0][:10, :20] = True  # 200 sprite pixels in image 0, none in image 1

    def edit(x):
        x[:, :5, :20] = np.where(x[:, :5, :20] > 0, -1.0, 1.0)  # half the sprite pixels
        return x

    r = evaluate_vqgan(FakeTokenizer(edit), zip(images, masks))
    assert r["pixel_accuracy_sprites"] == pytest.approx(0.5)
    orig, recon = images[0][:10, :20].astype(float), images[0][:10, :20].copy()
    recon[:5] = np.where(recon[:5] > 127, 0, 255)
    mse = ((orig - recon) ** 2).mean()  # image 1 has no sprite pixels: left out
    assert r["psnr_sprites"] == pytest.approx(10 * np.log10(255**2 / mse))
    # one image without a mask turns the sprite figures off
    r = evaluate_vqgan(FakeTokenizer(), [(images[0], masks[0]), (images[1], None)])
    assert r["pixel_accuracy_sprites"] is None and r["psnr_sprites"] is None


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    cfg = Config(name="micro", vqgan=micro_vqgan_config()).validate()
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
    assert result["psnr_patch4"] > result["psnr_patch8"] > result["psnr_patch16"]
    assert 0 <= result["pixel_accuracy"] <= 1 and result["off_grid_pixels"] >= 0
    # plain PNGs, not a synth dataset: no sprite figures, and the text output says why
    assert result["pixel_accuracy_sprites"] is None and result["psnr_sprites"] is None
    assert cli.main(["eval", "vqgan", "--model", str(model_dir), "--data", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "psnr_sprites            n/a" in text and "attributes.jsonl: missing" in text


def test_eval_command_sprite_figures_on_a_synth_dataset(model_dir, tmp_path, capsys):
    data = tmp_path / "synth"
    assert cli.main(["synth", str(data), "--count", "4", "--seed", "3"]) == 0
    records = [json.loads(line) for line in (data / "attributes.jsonl").read_text().splitlines()]
    assert any(r["landmark"] != "none" or r["vegetation"] != "none" for r in records)
    args = ["eval", "vqgan", "--model", str(model_dir), "--data", str(data), "--json"]
    capsys.readouterr()
    assert cli.main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["pixel_accuracy_sprites"] <= 1 and 0 < result["psnr_sprites"] < 100
    # an image that its record does not re-render to: null, and why on stderr
    image = data / "images" / records[2]["image"]
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image)
    assert cli.main(args) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["pixel_accuracy_sprites"] is None and result["psnr_sprites"] is None
    assert "does not give this image" in out.err


def test_load_tokenizer_loads_a_vqgan_and_rejects_unknown_kinds(model_dir, tmp_path):
    model = load_tokenizer(model_dir)
    assert isinstance(model, VQGAN) and model.codebook_size == 64
    config = json.loads((model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "image_tokenizer": "nope"}))
    with pytest.raises(ModelLoadError, match="unknown image_tokenizer 'nope'"):
        load_tokenizer(tmp_path)


def test_eval_command_bad_folder_is_one_line_error(model_dir, tmp_path, capsys):
    rc = cli.main(["eval", "vqgan", "--model", str(model_dir), "--data", str(tmp_path / "none")])
    assert rc == 2 and "error" in capsys.readouterr().err
    mx.clear_cache()
