"""The bundled model's images for two prompts and fixed seeds, pinned byte for byte.

The files under fixtures/pins are what `pixelscene generate PROMPT -n 2 --seed S --codes`
wrote (x86-64 Linux, MLX on the CPU, Debian's OpenBLAS preloaded as `make test` does).
Every engine and batch size must write exactly these files again. The codes are pinned
wherever MLX runs on the CPU; the PNGs only with OpenBLAS preloaded, since another BLAS
rounds the VQGAN's convolutions differently.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from pixelscene import cli, output
from pixelscene.pipeline import PixelScene

PINS = Path(__file__).parent / "fixtures" / "pins"
# name -> (prompt, seed of its first image)
PROMPTS = {
    "castle": ("a medieval castle on a hilltop at sunset", 7),
    "forest": ("a dark forest with a river at night", 9),
}
ENGINES = ("cpu", "mlx")

pytestmark = pytest.mark.skipif(
    mx.default_device().type != mx.cpu,
    reason="pinned on MLX's CPU device; a GPU's codes may differ in a few places",
)


def openblas_preloaded() -> bool:
    return "openblas" in os.environ.get("LD_PRELOAD", "")


def pinned_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


@pytest.fixture(autouse=True)
def no_reexec(monkeypatch):
    monkeypatch.setenv("PIXELSCENE_NO_OPENBLAS", "1")


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("engine", ENGINES)
def test_generate_writes_the_pinned_files(tmp_path, engine, batch):
    for name, (prompt, seed) in PROMPTS.items():
        out = tmp_path / f"{name}.png"
        argv = ["generate", prompt, "-n", "2", "--seed", str(seed), "--batch", str(batch)]
        assert cli.main([*argv, "--engine", engine, "--codes", "-o", str(out)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in PINS.iterdir())
    for name in written:
        if name.endswith(".json"):
            assert (tmp_path / name).read_bytes() == (PINS / name).read_bytes(), name
    if not openblas_preloaded():
        pytest.skip("codes match; the PNGs are pinned with OpenBLAS preloaded (make test)")
    for name in written:
        if name.endswith(".png"):
            assert (tmp_path / name).read_bytes() == (PINS / name).read_bytes(), name


@pytest.mark.parametrize("engine", ENGINES)
def test_a_batch_mixing_prompts_gives_the_pinned_images(engine):
    """Both prompts' images in batches of three, the second prompt's first image sharing a
    batch with the first prompt's two, through the library."""
    (castle, seed), (forest, _) = PROMPTS.values()
    scene = PixelScene.load(engine=engine)
    images = scene.generate([castle, forest], n=2, seed=seed, batch_size=3)
    names = ["castle_1", "castle_2", "forest_1", "forest_2"]
    for image, name in zip(images, names, strict=True):
        codes, meta = output.read_codes(PINS / f"{name}.json")
        assert (image.prompt, image.seed) == (meta["prompt"], meta["seed"])
        np.testing.assert_array_equal(image.codes, codes, err_msg=name)
        if openblas_preloaded():
            np.testing.assert_array_equal(
                image.pixels, pinned_pixels(PINS / f"{name}.png"), err_msg=name
            )
