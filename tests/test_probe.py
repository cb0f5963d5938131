"""Attribute probe: shapes, data loading errors, save/load round trip, and that it learns."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from pixelscene.data.attribute_data import load_attribute_data, load_sprite_maps, pool_images
from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.errors import DataError, ModelLoadError, PixelsceneError
from pixelscene.eval import probe as probe_mod
from pixelscene.eval.probe import AttributeProbe
from pixelscene.train.probe import _bilinear_up, augment, train_and_save

NAMES = list(ATTRIBUTES)


def colour_coded_image(attrs: dict[str, str], rng: np.random.Generator) -> np.ndarray:
    """Each attribute paints one horizontal band in a colour that encodes its value."""
    img = rng.integers(0, 40, size=(200, 320, 3), dtype=np.int64)
    for band, name in enumerate(NAMES):
        idx = ATTRIBUTES[name].index(attrs[name])
        colour = np.array([(idx * 53) % 256, (idx * 97 + 80) % 256, (idx * 31 + 160) % 256])
        img[band * 40 : band * 40 + 40] += colour
    return np.clip(img, 0, 255).astype(np.uint8)


def write_fake_dataset(root, count: int, seed: int):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(count):
        attrs = {k: v[int(rng.integers(len(v)))] for k, v in ATTRIBUTES.items()}
        name = f"{i:06d}.png"
        Image.fromarray(colour_coded_image(attrs, rng)).save(
            root / "images" / name, compress_level=1
        )
        lines.append(json.dumps({"image": name, **attrs, "celestial": []}))
    (root / "attributes.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_probe_shapes_and_pooling():
    probe = AttributeProbe(channels=(8, 16, 32))
    assert probe.pool == 2
    x = mx.zeros((3, 100, 160, 3))
    out = probe(x)
    assert {k: v.shape for k, v in out.items()} == {k: (3, len(v)) for k, v in ATTRIBUTES.items()}
    imgs = np.arange(2 * 200 * 320 * 3, dtype=np.float32).reshape(2, 200, 320, 3)
    pooled = pool_images(imgs)
    assert pooled.shape == (2, 100, 160, 3)
    np.testing.assert_allclose(pooled[1, 3, 5], imgs[1, 6:8, 10:12].mean(axis=(0, 1)))
    assert pool_images(imgs, 4).shape == (2, 50, 80, 3)


def test_augment_flips_blurs_and_stays_in_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(16, 100, 160, 3)).astype(np.float32)
    out = augment(x.copy(), np.random.default_rng(1), degrade=1.0)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    # Every image was blurred: neighbouring pixels differ far less than in white noise.
    assert np.abs(np.diff(out, axis=2)).mean() < 0.5 * np.abs(np.diff(x, axis=2)).mean()
    crisp = augment(x.copy(), np.random.default_rng(1), degrade=0.0)
    assert np.abs(np.diff(crisp, axis=2)).mean() > 0.7 * np.abs(np.diff(x, axis=2)).mean()
    up = _bilinear_up(np.ones((1, 5, 8, 3), np.float32), 4)
    np.testing.assert_allclose(up, np.ones((1, 20, 32, 3)))


def test_bad_attribute_data_names_file_and_line(tmp_path):
    d = write_fake_dataset(tmp_path / "d", 3, 0)
    lines = (d / "attributes.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    row["weather"] = "hail"
    lines[1] = json.dumps(row)
    (d / "attributes.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"attributes.jsonl:2: unknown weather 'hail'"):
        load_attribute_data(d)
    (d / "attributes.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DataError, match=r"attributes.jsonl:2: malformed JSON"):
        load_attribute_data(d)
    with pytest.raises(DataError, match="attributes file not found"):
        load_attribute_data(tmp_path / "nowhere")


def test_missing_probe_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not a probe folder"):
        probe_mod.load_probe(tmp_path)


def test_probe_learns_and_round_trips(tmp_path):
    train = write_fake_dataset(tmp_path / "train", 192, 1)
    held = write_fake_dataset(tmp_path / "eval", 32, 2)
    out = tmp_path / "probe"
    cache = tmp_path / "cache"
    result = train_and_save(
        train,
        held,
        out,
        epochs=6,
        batch_size=16,
        learning_rate=3e-3,
        seed=0,
        channels=[8, 16, 32],
        degrade=0.0,
        cache_dir=cache,
        maps=False,  # colour bands, not `pixelscene synth` scenes: no sprites to re-render
        progress_bar=False,
    )
    assert result.step == 6 * (192 // 16) and not result.interrupted
    info = {k: v for k, v in result.last_eval.items() if k not in ("step", "elapsed_s")}
    # The colour bands make every attribute easy: the probe must read them far above chance.
    chance = {k: 1 / len(v) for k, v in ATTRIBUTES.items()}
    for k in ATTRIBUTES:
        assert info["eval_accuracy"][k] > chance[k] + 0.2, (k, info["eval_accuracy"])
    assert info["eval_accuracy"]["mean"] > 0.5, info["eval_accuracy"]
    assert info["eval_images"] == 32 and info["train_images"] == 192
    saved = json.loads((out / "probe.json").read_text())
    assert saved["eval_accuracy"] == info["eval_accuracy"]
    assert {k: saved[k] for k in info} == info  # probe.json holds the figures measured
    assert saved["format"] == 2 and saved["pool"] == 2 and saved["input_size"] == [100, 160]
    assert all(v.dtype == mx.float16 for v in mx.load(str(out / "probe.safetensors")).values())
    # The decoded, pooled arrays were cached and load back equal.
    assert len(list(cache.glob("*.npz"))) == 2
    again = load_attribute_data(held, cache_dir=cache)
    np.testing.assert_array_equal(again[0], load_attribute_data(held)[0])
    assert saved["attributes"] == {k: list(v) for k, v in ATTRIBUTES.items()}

    probe, loaded_info = probe_mod.load_probe(out)
    pooled, labels = load_attribute_data(held)
    assert probe_mod.accuracy(probe, pooled, labels) == pytest.approx(info["eval_accuracy"])
    # predict_attributes reads uint8 images and names values.
    pixels = np.stack([np.array(Image.open(held / "images" / f"{i:06d}.png")) for i in range(4)])
    preds = probe_mod.predict_attributes(probe, pixels)
    assert len(preds) == 4 and all(set(p) == set(ATTRIBUTES) for p in preds)
    assert all(p[k] in ATTRIBUTES[k] for p in preds for k in p)


def test_a_run_starts_from_a_probe_and_trains_on_several_folders(tmp_path):
    a = write_fake_dataset(tmp_path / "a", 64, 1)
    b = write_fake_dataset(tmp_path / "b", 48, 3)
    held = write_fake_dataset(tmp_path / "eval", 32, 2)
    kw = {"batch_size": 16, "degrade": 0.0, "maps": False, "progress_bar": False}
    first = train_and_save(
        a, held, tmp_path / "first", epochs=6, learning_rate=3e-3, channels=[8, 16, 32], **kw
    )
    # A learning rate of ~0: the warm run keeps the first probe's weights (and its channels,
    # whatever the run asks for), so it reads the held-out scenes as well as that probe did.
    warm = train_and_save(
        [a, b],
        held,
        tmp_path / "warm",
        epochs=1,
        learning_rate=1e-9,
        channels=[4, 4, 4],
        init_from=tmp_path / "first",
        **kw,
    )
    assert warm.step == (64 + 48) // 16
    assert warm.last_eval["eval_accuracy"] == first.last_eval["eval_accuracy"]
    chance = np.mean([1 / len(v) for v in ATTRIBUTES.values()])  # what fresh weights read
    assert warm.last_eval["eval_accuracy"]["mean"] > chance + 0.1
    assert warm.last_eval["train_images"] == 112
    saved = json.loads((tmp_path / "warm" / "probe.json").read_text())
    assert saved["channels"] == [8, 16, 32] and saved["train_data"] == [str(a), str(b)]
    assert saved["init_from"] == str(tmp_path / "first")
    with pytest.raises(PixelsceneError, match="pooled by 2, this run pools by 4"):
        train_and_save(a, held, tmp_path / "p4", pool=4, init_from=tmp_path / "first", **kw)
    assert not (tmp_path / "p4").exists()


def test_a_probe_of_another_format_is_refused(tmp_path):
    p = AttributeProbe(channels=(4, 8, 8), hidden=16)
    probe_mod.save_probe(tmp_path, p, {})
    doc = json.loads((tmp_path / "probe.json").read_text())
    for fmt in (1, 9):  # format 1 (a 4x pooled, one-convolution probe) is no longer read
        (tmp_path / "probe.json").write_text(json.dumps({**doc, "format": fmt}))
        with pytest.raises(ModelLoadError, match=f"unknown format {fmt}"):
            probe_mod.load_probe(tmp_path)


def test_sprite_maps_name_the_sprite_under_each_cell(tmp_path):
    from pixelscene.data.sprites import scene_sprite_parts, scene_sprites, synth_records
    from pixelscene.data.synth import write_dataset

    write_dataset(tmp_path / "s", 12, seed=4, captions=1)
    maps = load_sprite_maps(tmp_path / "s", cache_dir=tmp_path / "cache")
    assert maps["landmark"].shape == (12, 13, 20) and maps["vegetation"].dtype == np.int8
    records = list(synth_records(tmp_path / "s").values())
    for i, r in enumerate(records):
        landmark, veg = scene_sprite_parts(r)
        assert not (landmark & veg).any()
        np.testing.assert_array_equal(landmark | veg, scene_sprites(r))
        for k, mask in (("landmark", landmark), ("vegetation", veg)):
            values = ATTRIBUTES[k]
            cells = set(np.unique(maps[k][i]).tolist())
            none = values.index("none")
            if r[k] == "none":
                assert cells == {none} and not mask.any()
            else:  # the scene's value where its sprite is, nothing else named
                assert values.index(r[k]) in cells and cells <= {-1, none, values.index(r[k])}
    again = load_sprite_maps(tmp_path / "s", cache_dir=tmp_path / "cache")  # from the cache
    np.testing.assert_array_equal(again["landmark"], maps["landmark"])


def test_probe_with_sprite_maps_trains_saves_and_loads(tmp_path):
    from pixelscene.data.synth import write_dataset

    write_dataset(tmp_path / "train", 32, seed=4, captions=1)
    write_dataset(tmp_path / "eval", 8, seed=5, captions=1, split="test")
    probe = AttributeProbe(channels=(8, 16, 32), maps=True)
    out = probe(mx.zeros((2, 100, 160, 3)), with_maps=True)
    assert out["landmark_map"].shape == (2, 13, 20, len(ATTRIBUTES["landmark"]))
    assert out["vegetation_map"].shape == (2, 13, 20, len(ATTRIBUTES["vegetation"]))
    assert set(probe(mx.zeros((2, 100, 160, 3)))) == set(ATTRIBUTES)  # maps only when asked
    result = train_and_save(
        tmp_path / "train",
        tmp_path / "eval",
        tmp_path / "probe",
        epochs=2,
        batch_size=16,
        channels=[8, 16, 32],
        progress_bar=False,
    )
    assert result.step == 4 and result.last_eval["map_weight"] == 1.0
    loaded, info = probe_mod.load_probe(tmp_path / "probe")
    assert info["maps"] is True and loaded.map_sizes == {"landmark": 6, "vegetation": 5}
    pooled, labels = load_attribute_data(tmp_path / "eval")
    assert probe_mod.accuracy(loaded, pooled, labels) == pytest.approx(info["eval_accuracy"])
