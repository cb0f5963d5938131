"""PixelScene: loading, seeds, batching, progress, early stop, decoding; on a random model."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from pixelscene import model_io
from pixelscene.errors import ModelLoadError, PixelsceneError
from pixelscene.pipeline import GenerationError, GenerationStep, PixelScene
from pixelscene.testing import make_random_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_random_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def scene(model_dir):
    return PixelScene.load(model_dir)


def test_random_model_dir_is_fast_and_stable(tmp_path, model_dir):
    start = time.perf_counter()
    d = make_random_model_dir(tmp_path / "m")
    PixelScene.load(d)
    assert time.perf_counter() - start < 2.0
    assert model_io.model_version(d) == model_io.model_version(model_dir)


def test_load_names_and_version(scene, model_dir):
    assert scene.name == "micro"
    assert scene.version == model_io.model_version(model_dir)
    assert scene.version.startswith("micro-")
    assert scene.model_dir == model_dir
    assert scene.grid_size == (13, 20)


@pytest.mark.parametrize(
    "missing", ["transformer.safetensors", "vqgan.safetensors", "tokenizer.json"]
)
def test_incomplete_model_is_a_clear_error(tmp_path, model_dir, missing):
    d = tmp_path / "partial"
    shutil.copytree(model_dir, d)
    (d / missing).unlink()
    with pytest.raises(ModelLoadError, match=f"missing {missing}"):
        PixelScene.load(d)


def test_not_a_model_folder_and_bundled_default(tmp_path, model_dir, monkeypatch):
    with pytest.raises(ModelLoadError, match="no config.json"):
        PixelScene.load(tmp_path)
    monkeypatch.setattr(model_io, "BUNDLED_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="absent"):
        PixelScene.load()
    monkeypatch.setattr(model_io, "BUNDLED_MODEL_DIR", model_dir)
    assert PixelScene.load().version == model_io.model_version(model_dir)


def test_generate_shapes_seeds_and_progress(scene):
    steps = list(
        scene.iter_generate(["a castle at sunset", "foggy hills"], n=2, seed=5, batch_size=3)
    )
    assert all(isinstance(s, GenerationStep) for s in steps)
    assert all(s.images is None for s in steps[:-1])
    last = steps[-1]
    assert last.done == last.total == 4 * 260
    done = [s.done for s in steps]
    assert done == sorted(done) and done[0] > 0
    # Two batches (3 + 1 images), each reporting progress along the way.
    assert any(0 < s.done < 3 * 260 for s in steps)
    assert any(3 * 260 < s.done < 4 * 260 for s in steps)
    images = last.images
    assert [(im.prompt, im.seed) for im in images] == [
        ("a castle at sunset", 5),
        ("a castle at sunset", 6),
        ("foggy hills", 7),
        ("foggy hills", 8),
    ]
    for im in images:
        assert im.codes.shape == (13, 20) and im.codes.dtype == np.int32
        assert 0 <= im.codes.min() and im.codes.max() < scene.codebook_size
        assert im.pixels.shape == (200, 320, 3) and im.pixels.dtype == np.uint8
    assert not np.array_equal(images[0].codes, images[1].codes)


def test_image_does_not_depend_on_its_batch(scene):
    prompts = ["a castle at sunset", "a lighthouse at night", ""]
    together = scene.generate(prompts, n=2, seed=11, batch_size=6)
    one_by_one = scene.generate(prompts, n=2, seed=11, batch_size=1)
    for a, b in zip(together, one_by_one, strict=True):
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.pixels, b.pixels)
    # Image j=1 of prompt i=2 regenerated alone with its own seed (11 + 2*2 + 1).
    alone = scene.generate([""], seed=16)[0]
    np.testing.assert_array_equal(alone.codes, together[5].codes)


def test_settings_default_to_config_and_change_output(scene):
    assert scene.resolve_settings() == {
        "temperature": scene.config.sampling.temperature,
        "top_k": scene.config.sampling.top_k,
        "top_p": scene.config.sampling.top_p,
        "cfg_scale": scene.config.sampling.cfg_scale,
    }
    base = scene.generate(["a castle"], seed=3)[0].codes
    again = scene.generate(["a castle"], seed=3)[0].codes
    greedy = scene.generate(["a castle"], seed=3, top_k=1)[0].codes
    np.testing.assert_array_equal(base, again)
    assert not np.array_equal(base, greedy)


@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": 0.0},
        {"top_k": -1},
        {"top_p": 1.5},
        {"cfg_scale": -1.0},
        {"n": 0},
        {"batch_size": 0},
        {"seed": -3},
    ],
)
def test_bad_settings_are_rejected(scene, kw):
    with pytest.raises(GenerationError):
        scene.iter_generate(["x"], **kw)


def test_bad_prompts_are_rejected(scene):
    with pytest.raises(GenerationError):
        scene.iter_generate([])
    with pytest.raises(GenerationError):
        scene.iter_generate("a castle")


def test_stopping_early_samples_no_more_batches(scene, monkeypatch):
    import pixelscene.sampling as sampling

    calls = []
    real = sampling.generate_codes

    def counting(*args, **kw):
        calls.append(len(kw["seeds"]))
        return real(*args, **kw)

    monkeypatch.setattr(sampling, "generate_codes", counting)
    it = scene.iter_generate(["a", "b", "c", "d"], seed=0, batch_size=1)
    first = next(it)
    assert first.done > 0 and first.images is None
    it.close()
    assert calls == [1]


def test_the_engine_is_chosen_at_load_and_samples_every_batch(model_dir, monkeypatch):
    import pixelscene.sampling as sampling

    assert PixelScene.load(model_dir).engine == sampling.resolve_engine("auto")
    scene = PixelScene.load(model_dir, engine="mlx")
    assert scene.engine == "mlx"
    engines = []
    real = sampling.generate_codes
    monkeypatch.setattr(
        sampling, "generate_codes", lambda *a, **kw: engines.append(kw["engine"]) or real(*a, **kw)
    )
    scene.generate(["a", "b"], seed=0, batch_size=1)
    assert engines == ["mlx", "mlx"]
    with pytest.raises(PixelsceneError, match="engine must be one of"):
        PixelScene.load(model_dir, engine="gpu")


def test_decode_codes_reproduces_generated_pixels(scene):
    images = scene.generate(["a tower", "ruins"], seed=9)
    single = scene.decode_codes(images[0].codes)
    np.testing.assert_array_equal(single, images[0].pixels)
    both = scene.decode_codes(np.stack([im.codes for im in images]))
    assert both.shape == (2, 200, 320, 3)
    np.testing.assert_array_equal(both[1], images[1].pixels)
    with pytest.raises(GenerationError, match="shape"):
        scene.decode_codes(np.zeros((12, 20), np.int32))
    with pytest.raises(GenerationError, match="0..63"):
        scene.decode_codes(np.full((13, 20), 64, np.int32))
