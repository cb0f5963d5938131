"""`pixelscene generate` and `pixelscene decode` end to end on a random model (in process)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixelscene import cli, model_io
from pixelscene.prompts import PROMPT_MAX
from pixelscene.testing import make_random_model_dir


@pytest.fixture(autouse=True)
def no_reexec(monkeypatch):
    monkeypatch.setenv("PIXELSCENE_NO_OPENBLAS", "1")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_random_model_dir(tmp_path_factory.mktemp("model"))


def read(path):
    with Image.open(path) as im:
        im.load()
        return im.mode, im.size, np.array(im), dict(im.text), im.getpalette()


def test_generate_n_images_with_codes_then_decode_exactly(tmp_path, model_dir, capsys):
    out = tmp_path / "out.png"
    rc = cli.main(
        ["generate", "a castle at sunset", "-o", str(out), "-n", "2", "--seed", "7"]
        + ["--temperature", "0.9", "--top-k", "20", "--cfg", "2.5", "--model", str(model_dir)]
        + ["--batch", "2", "--codes"]
    )
    assert rc == 0
    assert not out.exists()
    first, second = tmp_path / "out_1.png", tmp_path / "out_2.png"
    mode, size, pixels, text, _ = read(first)
    assert mode == "RGB" and size == (320, 200)
    assert text["prompt"] == "a castle at sunset" and text["seed"] == "7"
    assert text["temperature"] == "0.9" and text["top_k"] == "20" and text["cfg_scale"] == "2.5"
    assert text["top_p"] == "1.0"
    assert text["model"] == "micro" and text["model_version"] == model_io.model_version(model_dir)
    assert read(second)[3]["seed"] == "8"
    assert not np.array_equal(pixels, read(second)[2])

    doc = json.loads((tmp_path / "out_1.json").read_text())
    assert doc["prompt"] == "a castle at sunset" and doc["seed"] == 7
    assert doc["model_version"] == text["model_version"]
    assert np.array(doc["codes"]).shape == (13, 20)

    again = tmp_path / "again.png"
    assert (
        cli.main(
            ["decode", str(tmp_path / "out_1.json"), "-o", str(again), "--model", str(model_dir)]
        )
        == 0
    )
    np.testing.assert_array_equal(read(again)[2], pixels)
    assert read(again)[3]["prompt"] == "a castle at sunset"
    assert "wrote" in capsys.readouterr().out


def test_generate_palette_and_scale(tmp_path, model_dir):
    out = tmp_path / "p.png"
    args = ["generate", "foggy hills", "-o", str(out), "--seed", "1", "--model", str(model_dir)]
    assert cli.main([*args, "--palette", "auto:8", "--scale", "3", "--codes"]) == 0
    mode, size, idx, text, palette = read(out)
    assert mode == "P" and size == (960, 600)
    colours = np.array(palette, np.uint8).reshape(-1, 3)
    assert len(colours) <= 8 and idx.max() < len(colours)
    # Nearest-neighbour: every 3x3 block is one palette index.
    np.testing.assert_array_equal(idx, np.repeat(np.repeat(idx[::3, ::3], 3, 0), 3, 1))
    assert text["palette"] == "auto:8" and text["scale"] == "3"
    # decode reuses the palette and scale the code file records: the same image.
    re = tmp_path / "re.png"
    codes_file = out.with_suffix(".json")
    assert cli.main(["decode", str(codes_file), "-o", str(re), "--model", str(model_dir)]) == 0
    np.testing.assert_array_equal(read(re)[2], idx)
    assert read(re)[4] == palette and read(re)[3]["scale"] == "3"
    # options given to decode win over the recorded ones
    rgb = tmp_path / "rgb.png"
    decode = ["decode", str(codes_file), "-o", str(rgb), "--model", str(model_dir)]
    assert cli.main([*decode, "--palette", "none", "--scale", "1"]) == 0
    assert read(rgb)[0] == "RGB" and read(rgb)[1] == (320, 200)

    vga = tmp_path / "v.png"
    assert cli.main([*args, "-o", str(vga), "--palette", "vga"]) == 0
    assert read(vga)[0] == "P" and len(read(vga)[4]) == 256 * 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--palette", "auto:1"], "auto palette size"),
        (["--palette", "missing.gpl"], "cannot read palette"),
        (["--scale", "0"], "--scale"),
        (["--scale", "1000"], "--scale must be between 1 and 16"),
        (["--cfg", "nan"], "cfg_scale must be a finite number"),
        (["--temperature", "inf"], "temperature must be a finite number"),
        (["-n", "0"], "-n"),
        (["--temperature", "0"], "temperature"),
        (["--model", "/nonexistent"], "not a model folder"),
    ],
)
def test_errors_are_one_line(tmp_path, model_dir, capsys, extra, message):
    args = ["generate", "x", "-o", str(tmp_path / "o.png"), "--model", str(model_dir), *extra]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pixelscene: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("x" * (PROMPT_MAX + 1), f"error: prompt is {PROMPT_MAX + 1} characters, at most"),
        ("a castle\x1b[31m", "error: control character U+001B in the prompt"),
        ("a \u202eeltsac", "error: control character U+202E in the prompt"),
    ],
)
def test_prompts_the_api_would_refuse_are_refused(tmp_path, model_dir, capsys, prompt, message):
    args = ["generate", prompt, "-o", str(tmp_path / "o.png"), "--model", str(model_dir)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pixelscene: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o.png").exists()


def test_unwritable_output_fails_before_sampling(tmp_path, model_dir, capsys):
    (tmp_path / "afile").write_text("x")
    args = ["generate", "x", "-o", str(tmp_path / "afile" / "o.png"), "--model", str(model_dir)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pixelscene: error: cannot write") and "\n" not in err


def test_decode_rejects_bad_code_files(tmp_path, model_dir, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "pixelscene-codes", "rows": 1, "cols": 2, "codes": [[1, 999]]}')
    assert (
        cli.main(["decode", str(bad), "-o", str(tmp_path / "o.png"), "--model", str(model_dir)])
        == 2
    )
    assert "codes must have shape" in capsys.readouterr().err
