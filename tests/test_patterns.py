"""The pattern images: VGA DAC colours, palette sizes, determinism, variety, speed, the CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from pixelscene.data.datasets import CaptionDataset, ImageDataset
from pixelscene.data.patterns import LAYOUTS, pattern_with_info, render_pattern
from pixelscene.data.vga import DAC_LEVELS

N = 50


@pytest.fixture(scope="module")
def patterns():
    return [pattern_with_info(np.random.default_rng([21, i])) for i in range(N)]


def _colors(rgb: np.ndarray) -> int:
    return len(np.unique(rgb.reshape(-1, 3), axis=0))


def test_shape_dtype_and_dac_colours(patterns):
    for rgb, info in patterns:
        assert rgb.shape == (200, 320, 3) and rgb.dtype == np.uint8
        assert np.isin(rgb, DAC_LEVELS).all(), info
        assert 2 <= _colors(rgb) <= 64, info
        assert info["colors"] == _colors(rgb)


def test_same_rng_same_image_other_seed_differs():
    a = render_pattern(np.random.default_rng(7))
    assert np.array_equal(a, render_pattern(np.random.default_rng(7)))
    assert not np.array_equal(a, render_pattern(np.random.default_rng(8)))


def _is_2x(rgb: np.ndarray) -> bool:
    """Every 2x2 block one colour: drawn at 2x (or 4x) and scaled up."""
    return bool((rgb[0::2] == rgb[1::2]).all() and (rgb[:, 0::2] == rgb[:, 1::2]).all())


def test_patterns_vary(patterns):
    counts = [_colors(rgb) for rgb, _ in patterns]
    assert len(set(counts)) >= 12 and min(counts) <= 4 and max(counts) >= 20, counts
    doubled = sum(_is_2x(rgb) for rgb, _ in patterns)
    assert 8 <= doubled <= N - 15, doubled  # some at 2x (or 4x), many at 1x or 3x
    busy = [(rgb[:, 1:] != rgb[:, :-1]).any(-1).mean() for rgb, _ in patterns]
    assert min(busy) < 0.03 and max(busy) > 0.3, (min(busy), max(busy))
    assert {info["layout"] for _, info in patterns} == set(LAYOUTS)
    means = np.array([rgb.reshape(-1, 3).mean(0) for rgb, _ in patterns])
    assert means.std(0).min() > 15  # palettes differ, not one hue throughout


def test_render_speed_one_core():
    render_pattern(np.random.default_rng(0))
    n, cpu = 40, time.process_time()
    for i in range(n):
        render_pattern(np.random.default_rng([3, i]))
    rate = n / (time.process_time() - cpu)
    print(f"render_pattern: {rate:.0f} images/s per core")
    assert rate >= 50


def test_synth_cli_writes_patterns(tmp_path, monkeypatch, capsys):
    from pixelscene.cli import main
    from pixelscene.data.synth import write_dataset

    monkeypatch.setenv("PIXELSCENE_NO_OPENBLAS", "1")  # no re-exec of the test process
    out = tmp_path / "pat"
    assert main(["synth", str(out), "--count", "5", "--seed", "4", "--source", "patterns"]) == 0
    images = sorted((out / "images").glob("*.png"))
    assert [p.name for p in images] == [f"{i:06d}.png" for i in range(5)]
    for p in images:
        with Image.open(p) as im:
            assert im.size == (320, 200) and im.mode == "RGB"
    records = [json.loads(x) for x in (out / "patterns.jsonl").read_text().splitlines()]
    assert [r["image"] for r in records] == [p.name for p in images]
    assert all(r["layout"] in LAYOUTS and r["scale"] in (1, 2, 3, 4) for r in records)
    assert not (out / "attributes.jsonl").exists()
    assert len(ImageDataset(out)) == 5 and len(CaptionDataset(out)) == 5
    write_dataset(tmp_path / "two", 5, seed=4, workers=2, source="patterns")
    for p in images:
        assert p.read_bytes() == (tmp_path / "two" / "images" / p.name).read_bytes()
    assert main(["synth", str(out), "--source", "patterns", "--split", "test"]) == 2
    assert "split" in capsys.readouterr().err
