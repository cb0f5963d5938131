"""Output options: palettes (none, vga, auto:N, files), nearest upscale, metadata, code JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixelscene import output
from pixelscene.output import OutputError


def gradient_image(h: int = 200, w: int = 320, seed: int = 0) -> np.ndarray:
    """Many distinct colours (a smooth gradient plus noise), like a decoded VQGAN image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1)
    img = img + rng.integers(-8, 9, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def read_back(path):
    with Image.open(path) as im:
        im.load()
        return im.mode, im.size, im.getpalette(), np.array(im), dict(im.text)


def palette_colours(path) -> np.ndarray:
    mode, _, pal, _, _ = read_back(path)
    assert mode == "P"
    return np.array(pal, dtype=np.uint8).reshape(-1, 3)


def test_none_keeps_rgb_exactly(tmp_path):
    img = gradient_image()
    p = output.save_png(tmp_path / "a.png", img, palette_spec="none")
    mode, size, _, arr, _ = read_back(p)
    assert mode == "RGB" and size == (320, 200)
    np.testing.assert_array_equal(arr, img)


@pytest.mark.parametrize("n", [2, 16, 37, 256])
def test_auto_palette_has_exactly_n_colours(tmp_path, n):
    img = gradient_image()
    p = output.save_png(tmp_path / "a.png", img, palette_spec=f"auto:{n}")
    pal = palette_colours(p)
    assert len(pal) == n
    assert len(np.unique(pal, axis=0)) == n
    _, _, _, idx, _ = read_back(p)
    assert idx.max() < n
    # Every pixel was mapped to its nearest palette entry: the error is small.
    rgb = pal[idx].astype(int)
    err = np.abs(rgb - img.astype(int)).mean()
    assert err < {2: 80, 16: 20, 37: 14, 256: 6}[n]


def test_auto_palette_never_repeats_a_colour():
    # clustered colours: k-means centres that round to the same RGB used to leave duplicates
    rng = np.random.default_rng(0)
    for _ in range(60):
        base = rng.integers(0, 256, (int(rng.integers(3, 40)), 3))
        idx = rng.integers(0, len(base), (40, 64))
        img = np.clip(base[idx] + rng.integers(-1, 2, (40, 64, 3)), 0, 255).astype(np.uint8)
        n = int(rng.integers(2, 200))
        pal = output.auto_palette(img, n)
        colours = len(np.unique(img.reshape(-1, 3), axis=0))
        assert len(pal) == len(np.unique(pal, axis=0)) == min(n, colours)


def test_auto_palette_is_deterministic_and_exact_on_few_colours():
    img = gradient_image()
    a = output.auto_palette(img, 24)
    b = output.auto_palette(img.copy(), 24)
    np.testing.assert_array_equal(a, b)
    few = np.zeros((10, 10, 3), np.uint8)
    few[5:] = (200, 10, 30)
    pal = output.auto_palette(few, 16)
    assert sorted(map(tuple, pal.tolist())) == [(0, 0, 0), (200, 10, 30)]
    idx, pal = output.apply_palette(few, "auto:16")
    np.testing.assert_array_equal(pal[idx], few)


@pytest.mark.parametrize("spec", ["auto:1", "auto:257", "auto:x", "auto", "nope.txt"])
def test_bad_specs_are_rejected(spec):
    with pytest.raises(OutputError):
        output.check_palette_spec(spec)


def test_vga_palette_snaps_to_the_256_default_colours(tmp_path):
    from pixelscene.data.vga import VGA_DEFAULT_PALETTE

    vga = output.vga_palette()
    assert vga.shape == (256, 3)
    # 6-bit DAC levels scaled to 8 bits: black, white and the 16 EGA colours are in it.
    assert (0, 0, 0) in map(tuple, vga.tolist()) and (255, 255, 255) in map(tuple, vga.tolist())
    assert len(np.asarray(VGA_DEFAULT_PALETTE).reshape(-1, 3)) == 256
    img = gradient_image()
    p = output.save_png(tmp_path / "v.png", img, palette_spec="vga")
    pal = palette_colours(p)
    np.testing.assert_array_equal(pal, vga)
    _, _, _, idx, _ = read_back(p)
    # Each pixel is its nearest VGA colour.
    sample = img.reshape(-1, 3)[::97].astype(int)
    d = ((sample[:, None, :] - vga[None].astype(int)) ** 2).sum(-1)
    chosen = vga[idx.reshape(-1)[::97]].astype(int)
    np.testing.assert_array_equal(((sample - chosen) ** 2).sum(-1), d.min(1))


PALETTE = [(0, 0, 0), (255, 255, 255), (200, 40, 16), (16, 120, 48), (32, 64, 160)]


def write_palette_files(tmp_path):
    gpl = tmp_path / "p.gpl"
    gpl.write_text(
        "GIMP Palette\nName: test\nColumns: 4\n# a comment\n\n"
        + "".join(f"{r:3d} {g:3d} {b:3d}\tcolour {i}\n" for i, (r, g, b) in enumerate(PALETTE))
    )
    pal = tmp_path / "p.pal"
    pal.write_text("JASC-PAL\r\n0100\r\n5\r\n" + "".join(f"{r} {g} {b}\r\n" for r, g, b in PALETTE))
    hexf = tmp_path / "p.hex"
    hexf.write_text("".join(f"{r:02x}{g:02x}{b:02X}\n" for r, g, b in PALETTE) + "\n")
    return [gpl, pal, hexf]


def test_palette_files_give_exactly_their_colours(tmp_path):
    img = gradient_image()
    for f in write_palette_files(tmp_path):
        np.testing.assert_array_equal(output.parse_palette_file(f), np.array(PALETTE, np.uint8))
        p = output.save_png(tmp_path / f"{f.suffix[1:]}.png", img, palette_spec=str(f), scale=2)
        pal = palette_colours(p)
        np.testing.assert_array_equal(pal, np.array(PALETTE, np.uint8))
        _, size, _, idx, _ = read_back(p)
        assert size == (640, 400)
        assert set(np.unique(idx).tolist()) <= set(range(len(PALETTE)))


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.gpl", "GIMP Palette\nName: x\n10 20 30\n10 20\n", ":4:"),
        ("bad2.gpl", "GIMP Palette\n1 2 300\n", ":2:"),
        ("nohead.gpl", "10 20 30\n", ":1:"),
        ("bad.pal", "JASC-PAL\n0100\n3\n1 2 3\n4 5 6\n", ":3:"),
        ("bad2.pal", "JASC-PAL\n0100\n2\n1 2 3\n4 x 6\n", ":5:"),
        ("bad.hex", "ffffff\n00ff00\nzz0000\n", ":3:"),
        ("empty.hex", "\n", "no colours"),
    ],
)
def test_palette_parse_errors_name_file_and_line(tmp_path, name, text, where):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(OutputError) as e:
        output.parse_palette_file(f)
    assert str(f) in str(e.value) and where in str(e.value)


def test_missing_palette_file_is_an_error(tmp_path):
    with pytest.raises(OutputError, match="cannot read"):
        output.resolve_palette(str(tmp_path / "missing.gpl"), gradient_image(4, 4))


def test_scale_is_nearest_neighbour(tmp_path):
    img = gradient_image(20, 32)
    up = output.upscale(img, 3)
    assert up.shape == (60, 96, 3)
    np.testing.assert_array_equal(up[::3, ::3], img)
    np.testing.assert_array_equal(up[2::3, 1::3], img)
    # Only the original colours appear: no smoothing.
    p = output.save_png(tmp_path / "s.png", img, scale=4)
    _, size, _, arr, _ = read_back(p)
    assert size == (128, 80)
    np.testing.assert_array_equal(arr, output.upscale(img, 4))
    with pytest.raises(OutputError):
        output.upscale(img, 0)


def test_metadata_round_trips_through_png_text(tmp_path):
    meta = output.generation_metadata(
        prompt="a castle at sunset, für dich",
        seed=7,
        settings={"temperature": 0.9, "top_k": 100, "top_p": 1.0, "cfg_scale": 3.0},
        model_name="tiny",
        model_version="tiny-0123456789ab",
    )
    p = output.save_png(tmp_path / "m.png", gradient_image(), palette_spec="auto:8", metadata=meta)
    text = output.read_png_metadata(p)
    assert text["prompt"] == "a castle at sunset, für dich"
    assert text["seed"] == "7"
    assert text["temperature"] == "0.9" and text["top_k"] == "100" and text["cfg_scale"] == "3.0"
    assert text["model"] == "tiny" and text["model_version"] == "tiny-0123456789ab"


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    output.save_png(target, gradient_image(8, 8))
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("pixelscene.model_io.os.replace", boom)
    with pytest.raises(OutputError, match="cannot write .*out.png: disk full"):
        output.save_png(target, gradient_image(8, 8, seed=1))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_codes_json_round_trip_and_errors():
    codes = np.arange(260, dtype=np.int32).reshape(13, 20) % 512
    text = output.codes_to_json(
        codes,
        prompt="castle",
        seed=3,
        model_name="tiny",
        model_version="tiny-abc",
        settings={"cfg_scale": 3.0},
    )
    back, meta = output.codes_from_json(text)
    np.testing.assert_array_equal(back, codes)
    assert back.dtype == np.int32
    assert meta["prompt"] == "castle" and meta["seed"] == 3 and meta["model_version"] == "tiny-abc"
    doc = json.loads(text)
    doc["codes"][3] = doc["codes"][3][:-1]
    with pytest.raises(OutputError, match="rectangular"):
        output.codes_from_json(json.dumps(doc))
    with pytest.raises(OutputError, match="not valid JSON"):
        output.codes_from_json("{", "f.json")
    with pytest.raises(OutputError, match="format"):
        output.codes_from_json("{}")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"codes": [[]]}, "rectangular"),
        ({"codes": []}, "rectangular"),
        ({"codes": [[1, -2]]}, ">= 0"),
        ({"codes": [[10**30]]}, "below 2\\*\\*31"),
        ({"codes": [[1, True]]}, "rectangular"),
        ({"settings": [1]}, "'settings' must be an object"),
        ({"seed": "7"}, "'seed' must be an integer"),
        ({"scale": 2.5}, "'scale' must be an integer"),
    ],
)
def test_malformed_code_files_are_named_errors(change, message):
    doc = json.loads(output.codes_to_json(np.zeros((1, 2), np.int32)))
    doc.update(change)
    with pytest.raises(OutputError, match=message):
        output.codes_from_json(json.dumps(doc), "f.json")


def test_code_file_that_is_not_text(tmp_path):
    path = tmp_path / "codes.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(OutputError, match="not a text file"):
        output.read_codes(path)


def test_output_paths_are_checked_before_any_work(tmp_path):
    output.check_output_path(tmp_path / "new" / "deeper" / "o.png")  # folders are made later
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is not a folder"):
        output.check_output_path(tmp_path / "afile" / "o.png")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        output.check_output_path(tmp_path / "d.png")
    with pytest.raises(OutputError, match="must end in .png"):
        output.check_output_path(tmp_path / "o.jpg")
    with pytest.raises(OutputError, match="cannot write"):
        output.save_png(tmp_path / "afile" / "o.png", gradient_image(8, 8, seed=1))
    for bad in (0, output.MAX_SCALE + 1):
        with pytest.raises(OutputError, match="--scale must be between"):
            output.check_scale(bad)


def test_numbered_paths(tmp_path):
    assert output.numbered_paths(tmp_path / "out.png", 1) == [tmp_path / "out.png"]
    assert [p.name for p in output.numbered_paths(tmp_path / "out.png", 3)] == [
        "out_1.png",
        "out_2.png",
        "out_3.png",
    ]


@pytest.mark.parametrize("name", ["castle_1", "castle_2", "forest_1", "forest_2"])
def test_save_generated_writes_the_pinned_bytes(tmp_path, name):
    """The pinned files (tests/test_pins.py) written again from their own pixels and codes:
    the PNG and code grid `generate --codes` and the generation jobs both write."""
    from pathlib import Path

    from pixelscene.pipeline import GeneratedImage

    pins = Path(__file__).parent / "fixtures" / "pins"
    codes, meta = output.read_codes(pins / f"{name}.json")
    with Image.open(pins / f"{name}.png") as im:
        pixels = np.array(im.convert("RGB"))
    image = GeneratedImage(meta["prompt"], meta["seed"], codes, pixels)
    png, json_path = output.save_generated(
        tmp_path / f"{name}.png",
        image,
        model_name=meta["model"],
        model_version=meta["model_version"],
        settings=meta["settings"],
        palette=meta["palette"],
        scale=meta["scale"],
        codes_path=tmp_path / f"{name}.json",
    )
    assert png.read_bytes() == (pins / f"{name}.png").read_bytes()
    assert json_path.read_bytes() == (pins / f"{name}.json").read_bytes()


def test_save_generated_with_a_palette_only_the_writer_can_resolve(tmp_path):
    """A server's named palette: its colours in the PNG, its name in the metadata, and no
    palette in the code grid (a client's `decode` has no such file)."""
    from pixelscene.pipeline import GeneratedImage

    palette_file = write_palette_files(tmp_path)[2]
    image = GeneratedImage("castle", 3, np.ones((13, 20), np.int32), gradient_image())
    common = dict(model_name="tiny", model_version="tiny-abc", settings={"top_k": 0}, scale=2)
    png, json_path = output.save_generated(
        tmp_path / "a.png",
        image,
        palette="retro",
        palette_spec=str(palette_file),
        codes_path=tmp_path / "a.json",
        **common,
    )
    np.testing.assert_array_equal(palette_colours(png), np.array(PALETTE, np.uint8))
    text = output.read_png_metadata(png)
    assert list(text) == [
        "Software", "prompt", "seed", "top_k", "model", "model_version", "palette", "scale",
    ]  # fmt: skip
    assert text["palette"] == "retro" and text["scale"] == "2" and text["seed"] == "3"
    doc = json.loads(json_path.read_text())
    assert "palette" not in doc and doc["scale"] == 2 and doc["settings"] == {"top_k": 0}
    # without codes_path no code grid; the palette named outright is recorded in both
    png, json_path = output.save_generated(
        tmp_path / "b.png", image, palette=str(palette_file), **common
    )
    assert json_path is None and sorted(p.name for p in tmp_path.glob("b.*")) == ["b.png"]
    assert png.read_bytes() != (tmp_path / "a.png").read_bytes()  # only the metadata differs
    np.testing.assert_array_equal(read_back(png)[3], read_back(tmp_path / "a.png")[3])
