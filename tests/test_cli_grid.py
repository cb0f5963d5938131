"""`pixelscene grid`: a prompt list as one labelled sheet whose cells are `generate`'s images."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelscene import cli, model_io, output
from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.data.captions import named_values
from pixelscene.output import sheet
from pixelscene.prompts import PROMPT_MAX, SHOWCASE_PROMPTS, read_prompt_file
from pixelscene.testing import make_random_model_dir

H, W, GAP = 200, 320, 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_random_model_dir(tmp_path_factory.mktemp("model"))


def pixels_of(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def cell(grid, index, columns, scale, band):
    """The image part of cell `index` of a grid written at `scale`."""
    r, c = divmod(index, columns)
    y, x = r * (H + band + GAP) * scale, c * (W + GAP) * scale
    return grid[y : y + H * scale, x : x + W * scale]


def test_cells_are_generate_images_upscaled(tmp_path, model_dir, capsys):
    prompts = ["a castle at sunset", "foggy hills", "a lighthouse at night"]
    listing = tmp_path / "prompts.txt"
    listing.write_text("# three scenes\n\n" + "\n".join(f"  {p}  " for p in prompts) + "\n")
    out = tmp_path / "grid.png"
    common = ["--model", str(model_dir), "--seed", "5"]
    args = ["grid", "-o", str(out), "--prompts", str(listing), "--columns", "2", "--scale", "2"]
    assert cli.main([*args, *common, "--batch", "2"]) == 0
    grid, text = pixels_of(out), output.read_png_metadata(out)
    band = sheet.LABEL_H
    assert band > 7  # the 5x7 font fits the band
    assert grid.shape == (2 * (2 * (H + band) + GAP), 2 * (2 * W + GAP), 3)
    assert json.loads(text["prompts"]) == prompts and text["seed"] == "5"
    assert text["model"] == "micro" and text["model_version"] == model_io.model_version(model_dir)
    assert text["columns"] == "2" and text["scale"] == "2"
    assert "wrote" in capsys.readouterr().out

    for i, prompt in enumerate(prompts):
        single = tmp_path / f"single_{i}.png"
        assert (
            cli.main(["generate", prompt, "-o", str(single), *common[:2], "--seed", str(5 + i)])
            == 0
        )
        upscaled = np.repeat(np.repeat(pixels_of(single), 2, axis=0), 2, axis=1)
        np.testing.assert_array_equal(cell(grid, i, 2, 2, band), upscaled)
    # The fourth cell is empty: background only.
    assert (cell(grid, 3, 2, 2, band) == sheet.BACKGROUND).all()


def test_grid_size_follows_columns_scale_and_labels(tmp_path, model_dir):
    listing = tmp_path / "p.txt"
    listing.write_text("a\nb\nc\nd\ne\n")
    out = tmp_path / "g.png"
    base = ["grid", "-o", str(out), "--prompts", str(listing), "--model", str(model_dir)]
    for extra, shape in [
        (["--columns", "3", "--scale", "1", "--no-labels"], (2 * H + GAP, 3 * W + 2 * GAP)),
        (["--columns", "5", "--scale", "1"], (H + sheet.LABEL_H, 5 * W + 4 * GAP)),
        (["--columns", "9", "--scale", "1", "--no-labels"], (H, 5 * W + 4 * GAP)),
        (
            ["--columns", "4", "--scale", "3", "--no-labels"],
            (3 * (2 * H + GAP), 3 * (4 * W + 3 * GAP)),
        ),
    ]:
        assert cli.main([*base, *extra]) == 0, extra
        assert pixels_of(out).shape == (*shape, 3), extra


def test_labels_draw_inside_their_band_only():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    labels = ["a castle at sunset, clear", "x" * 200, "ab"]
    plain = sheet.labelled_grid(images, None, columns=3)
    labelled = sheet.labelled_grid(images, labels, columns=3)
    assert labelled.shape == (H + sheet.LABEL_H, 3 * W + 2 * GAP, 3)
    for i, label in enumerate(labels):
        x = i * (W + GAP)
        np.testing.assert_array_equal(labelled[:H, x : x + W], plain[:, x : x + W])
        band = labelled[H:, x : x + W]
        ink = (band == sheet.INK).all(-1)
        assert ink.any(), label
        assert ((band == sheet.INK) | (band == sheet.BACKGROUND)).all()
        rows, cols = np.nonzero(ink)
        assert rows.min() >= sheet.PAD and rows.max() < sheet.PAD + 7
        text = sheet.fit_label(label, W)
        assert cols.min() >= sheet.PAD and cols.max() < sheet.PAD + len(text) * 6
        assert cols.max() < W - sheet.PAD
    # Gutters stay background.
    assert (labelled[:, W : W + GAP] == sheet.BACKGROUND).all()
    # A long label is cut to the cell with '..'; different texts draw differently.
    assert sheet.fit_label("x" * 200, W) == "x" * (sheet.label_chars(W) - 2) + ".."
    assert sheet.fit_label(" two\twords ", W) == "two words"
    assert not np.array_equal(sheet.label_band("ab", W), sheet.label_band("ba", W))
    np.testing.assert_array_equal(sheet.label_band("\u00e9", W), sheet.label_band("?", W))


def test_prompt_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(
        b"\xef\xbb\xbf# a list\n\n  castle at dusk \r\n#\n\tfoggy hills\n" + b"x" * 500
    )
    assert read_prompt_file(path) == ["castle at dusk", "foggy hills", "x" * PROMPT_MAX]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "{path}: no prompts"),
        (b"# only a comment\n\n   \n", "{path}: no prompts"),
        (
            b"fine\n\n" + b"x" * (PROMPT_MAX + 1) + b"\n",
            "{path}:3: prompt is 501 characters, at most 500",
        ),
        (b"fine\n\xff\xfe oops\n", "{path}:2: not UTF-8 text"),
        (b"a\x00b\n", "{path}:1: control character U+0000"),
        (None, "cannot read {path}"),
    ],
)
def test_bad_prompt_files_are_one_line_errors(tmp_path, model_dir, capsys, content, message):
    path = tmp_path / "prompts.txt"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "grid.png"
    rc = cli.main(["grid", "-o", str(out), "--prompts", str(path), "--model", str(model_dir)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pixelscene: error:") and "\n" not in err
    assert message.format(path=path) in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--columns", "0"], "--columns must be >= 1"),
        (["--scale", "0"], "--scale must be between 1 and 16"),
        (["--scale", "16", "--columns", "1"], "the grid would be 5120x"),
        (["--seed", "-1"], "seed must be in"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--model", "no-such-model"], "not a model folder"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, model_dir, capsys, extra, message):
    out = tmp_path / "grid.png"
    assert cli.main(["grid", "-o", str(out), "--model", str(model_dir), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pixelscene: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_showcase_prompts_name_distinct_combinations_of_every_value():
    assert len(SHOWCASE_PROMPTS) == 16
    combinations = set()
    seen = {attribute: Counter() for attribute in ATTRIBUTES}
    for prompt in SHOWCASE_PROMPTS:
        named = {a: [v for a2, v in named_values(prompt) if a2 == a] for a in ATTRIBUTES}
        for attribute in ("time", "weather", "terrain"):
            assert len(named[attribute]) == 1, (prompt, attribute)
        assert len(named["landmark"]) <= 1 and len(named["vegetation"]) <= 1, prompt
        values = tuple(named[a][0] if named[a] else "none" for a in ATTRIBUTES)
        combinations.add(values)
        for attribute, value in zip(ATTRIBUTES, values, strict=True):
            seen[attribute][value] += 1
        assert sheet.fit_label(prompt, W) == prompt  # each label shows whole
    assert len(combinations) == len(SHOWCASE_PROMPTS)
    for attribute, values in ATTRIBUTES.items():
        assert set(seen[attribute]) == set(values), attribute


def test_model_names_a_bundled_model_unless_a_folder_has_that_name(tmp_path, monkeypatch):
    assert model_io.model_dir_or_bundled("tiny") == model_io.BUNDLED_MODEL_DIR
    assert model_io.model_dir_or_bundled(None) is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    assert model_io.model_dir_or_bundled("tiny") == Path("tiny")  # the folder here
    assert model_io.model_dir_or_bundled("x/tiny") == Path("x/tiny")
