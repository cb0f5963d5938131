"""Attribute probe: shapes, data loading errors, save/load round trip, and that it learns."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.errors import DataError, ModelLoadError
from pixelscene.eval import probe as probe_mod
from pixelscene.eval.probe import AttributeProbe

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
    probe = AttributeProbe()
    x = mx.zeros((3, 50, 80, 3))
    out = probe(x)
    assert {k: v.shape for k, v in out.items()} == {k: (3, len(v)) for k, v in ATTRIBUTES.items()}
    imgs = np.arange(2 * 200 * 320 * 3, dtype=np.float32).reshape(2, 200, 320, 3)
    pooled = probe_mod.pool_images(imgs)
    assert pooled.shape == (2, 50, 80, 3)
    np.testing.assert_allclose(pooled[1, 3, 5], imgs[1, 12:16, 20:24].mean(axis=(0, 1)))


def test_bad_attribute_data_names_file_and_line(tmp_path):
    d = write_fake_dataset(tmp_path / "d", 3, 0)
    lines = (d / "attributes.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    row["weather"] = "hail"
    lines[1] = json.dumps(row)
    (d / "attributes.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"attributes.jsonl:2: unknown weather 'hail'"):
        probe_mod.load_attribute_data(d)
    (d / "attributes.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DataError, match=r"attributes.jsonl:2: malformed JSON"):
        probe_mod.load_attribute_data(d)
    with pytest.raises(DataError, match="attributes file not found"):
        probe_mod.load_attribute_data(tmp_path / "nowhere")


def test_missing_probe_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not a probe folder"):
        probe_mod.load_probe(tmp_path)


def test_probe_learns_and_round_trips(tmp_path):
    train = write_fake_dataset(tmp_path / "train", 96, 1)
    held = write_fake_dataset(tmp_path / "eval", 32, 2)
    out = tmp_path / "probe"
    info = probe_mod.train_and_save(
        train, held, out, epochs=5, batch_size=16, seed=0, channels=[8, 16, 32]
    )
    # The colour bands make every attribute easy: the probe must read them far above chance.
    chance = {k: 1 / len(v) for k, v in ATTRIBUTES.items()}
    for k in ATTRIBUTES:
        assert info["eval_accuracy"][k] > chance[k] + 0.3, (k, info["eval_accuracy"])
    assert info["eval_images"] == 32 and info["train_images"] == 96
    saved = json.loads((out / "probe.json").read_text())
    assert saved["eval_accuracy"] == info["eval_accuracy"]
    assert saved["attributes"] == {k: list(v) for k, v in ATTRIBUTES.items()}

    probe, loaded_info = probe_mod.load_probe(out)
    pooled, labels = probe_mod.load_attribute_data(held)
    assert probe_mod.accuracy(probe, pooled, labels) == pytest.approx(info["eval_accuracy"])
    # predict_attributes reads uint8 images and names values.
    pixels = np.stack([np.array(Image.open(held / "images" / f"{i:06d}.png")) for i in range(4)])
    preds = probe_mod.predict_attributes(probe, pixels)
    assert len(preds) == 4 and all(set(p) == set(ATTRIBUTES) for p in preds)
    assert all(p[k] in ATTRIBUTES[k] for p in preds for k in p)
