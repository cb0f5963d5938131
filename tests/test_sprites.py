import json

import numpy as np
import pytest
from PIL import Image

from pixelscene.data.render import render_scene
from pixelscene.data.sprites import cell_coverage, scene_sprites, sprite_coverage
from pixelscene.data.synth import write_dataset
from pixelscene.errors import DataError
from pixelscene.train.transformer import (
    position_weights,
    sprite_weights,
)

ATTRS = dict(time="day", weather="clear", terrain="hills", celestial=["sun"])


def test_render_marks_exactly_the_sprite_pixels():
    plain, info = render_scene(
        dict(ATTRS, landmark="none", vegetation="none"), np.random.default_rng(3)
    )
    assert not info["sprites"].any()
    _, info = render_scene(
        dict(ATTRS, landmark="castle", vegetation="none"), np.random.default_rng(3)
    )
    mask = info["sprites"]
    assert 0.005 < mask.mean() < 0.2  # a castle: a few percent of the image
    rows, cols = np.nonzero(mask)
    assert cols.max() - cols.min() < 80 and rows.max() - rows.min() < 80  # one compact sprite


def test_cell_coverage_is_the_covered_fraction_of_each_padded_cell():
    mask = np.zeros((200, 320), bool)
    mask[0:12, 0:16] = True  # with 4 padded rows on top: 12 of the first cell's 16 rows
    mask[196:200, 304:320] = True  # the last cell: 4 real rows, then 4 padded, 8 below it
    cover = cell_coverage(mask, (4, 4)).reshape(13, 20)
    assert cover[0, 0] == pytest.approx(12 / 16)
    assert cover[12, 19] == pytest.approx(4 / 16)
    assert cover.sum() == pytest.approx(16 / 16)


@pytest.fixture()
def synth_dir(tmp_path):
    root = tmp_path / "synth"
    write_dataset(root, 6, seed=5, captions=2)
    return root


def test_sprite_coverage_rerenders_checks_and_caches(synth_dir):
    lines = (synth_dir / "attributes.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    names = [r["image"] for r in records]
    cover = sprite_coverage(synth_dir, names[:4], (4, 4), progress=False)
    assert cover.shape == (4, 260) and cover.min() >= 0 and cover.max() <= 1
    for r, c in zip(records, cover):
        expected = r["landmark"] != "none" or r["vegetation"] != "none"
        assert (c.sum() > 0) == expected
        assert np.allclose(c, cell_coverage(scene_sprites(r), (4, 4)))
    cache = synth_dir / "sprites_13x20.npz"
    assert cache.is_file()
    (synth_dir / "images" / names[0]).write_bytes(b"")  # cached: the image is not read again
    assert np.array_equal(sprite_coverage(synth_dir, names[:1], (4, 4), progress=False), cover[:1])
    # a new name is rendered and checked against its stored image
    other = records[4]
    image = synth_dir / "images" / other["image"]
    pixels = np.asarray(Image.open(image).convert("RGB")).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image)
    with pytest.raises(DataError, match=other["image"]):
        sprite_coverage(synth_dir, [other["image"]], (4, 4), progress=False)
    with pytest.raises(DataError, match="no record for"):
        sprite_coverage(synth_dir, ["999999.png"], (4, 4), progress=False)


def test_sprite_weights_have_mean_one_and_favour_covered_codes():
    position = np.array(position_weights(260, 20, 8.0))
    coverage = np.zeros((2, 260), np.float32)
    coverage[0, 100] = 1.0
    coverage[1, 101] = 0.5
    w = sprite_weights(position, coverage, 8.0)
    assert w.shape == (2, 260) and w.mean() == pytest.approx(1.0)
    assert w[0, 100] / w[0, 102] == pytest.approx(9.0)  # 1 + 8 x 1
    assert w[1, 101] / w[1, 102] == pytest.approx(5.0)  # 1 + 8 x 0.5
    assert w[0, 0] / w[0, 102] == pytest.approx(8.0)  # the first row keeps its weight


def test_records_without_synth_fields_are_rejected():
    record = dict(ATTRS, image="000001.png", landmark="castle")  # no seed, no vegetation
    with pytest.raises(DataError, match="not a `pixelscene synth` record"):
        scene_sprites(record)
