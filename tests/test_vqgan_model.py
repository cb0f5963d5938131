"""Whole VQGAN: exact 320x200 <-> 13x20, padding/cropping, save/load, mismatched configs."""

import mlx.core as mx
import numpy as np
import pytest

from pixelscene import model_io
from pixelscene.config import Config
from pixelscene.errors import ModelLoadError
from pixelscene.testing import micro_vqgan_config as micro
from pixelscene.vqgan import VQGAN, load_vqgan


@pytest.fixture(scope="module")
def model():
    return VQGAN(micro())


def test_grid_is_13x20():
    assert micro().grid_size == (13, 20) and micro().downsample_factor == 16


def test_encode_decode_shapes_and_dtypes(model):
    images = mx.random.uniform(-1, 1, (2, 200, 320, 3))
    codes = model.encode(images)
    assert codes.shape == (2, 13, 20) and codes.dtype == mx.int32
    c = np.array(codes)
    assert c.min() >= 0 and c.max() < 64
    out = model.decode(codes)
    assert out.shape == (2, 200, 320, 3) and out.dtype == mx.float32
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0


def test_decode_accepts_other_int_dtypes(model):
    codes = mx.zeros((1, 13, 20), dtype=mx.int64)
    assert model.decode(codes).shape == (1, 200, 320, 3)


def test_pad_replicates_edge_rows_and_crop_inverts(model):
    images = mx.random.uniform(-1, 1, (1, 200, 320, 3))
    padded = np.array(model.pad(images))
    x = np.array(images)
    assert padded.shape == (1, 208, 320, 3)
    for r in range(4):
        np.testing.assert_array_equal(padded[0, r], x[0, 0])
        np.testing.assert_array_equal(padded[0, 204 + r], x[0, 199])
    np.testing.assert_array_equal(padded[0, 4:204], x[0])
    np.testing.assert_array_equal(np.array(model.crop(mx.array(padded))), x)


def test_wrong_image_size_is_rejected(model):
    with pytest.raises(ValueError, match="200, 320"):
        model.encode(mx.zeros((1, 192, 320, 3)))


def test_forward_on_crops(model):
    x = mx.random.uniform(-1, 1, (2, 64, 64, 3))
    recon, indices, vq_loss = model(x)
    assert recon.shape == x.shape and indices.shape == (2, 4, 4) and vq_loss.shape == ()


def test_save_load_round_trip(tmp_path, model):
    cfg = Config(name="micro", vqgan=micro()).validate()
    model_io.save_model_config(tmp_path, cfg)
    model_io.save_weights(tmp_path / "vqgan.safetensors", model)
    loaded = load_vqgan(tmp_path)
    images = mx.random.uniform(-1, 1, (1, 200, 320, 3))
    codes = model.encode(images)
    np.testing.assert_array_equal(np.array(loaded.encode(images)), np.array(codes))
    np.testing.assert_allclose(
        np.array(loaded.decode(codes)), np.array(model.decode(codes)), atol=1e-6
    )


def test_float16_weights_load_as_float32(tmp_path, model):
    model_io.save_model_config(tmp_path, Config(name="micro", vqgan=micro()).validate())
    model_io.save_weights(tmp_path / "vqgan.safetensors", model, dtype=mx.float16)
    loaded = load_vqgan(tmp_path)
    assert loaded.quantizer.codebook.dtype == mx.float32


def test_mismatched_config_fails_clearly(tmp_path, model):
    model_io.save_model_config(
        tmp_path, Config(name="micro", vqgan=micro(hidden_channels=16)).validate()
    )
    model_io.save_weights(tmp_path / "vqgan.safetensors", model)
    with pytest.raises(ModelLoadError, match="config"):
        load_vqgan(tmp_path)


def test_missing_model_folder_fails_clearly(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_vqgan(tmp_path)
