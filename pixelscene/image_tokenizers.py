"""Image tokenizers: models that turn 320x200 images into grids of codes and back.

(Not the caption tokenizer: that is `pixelscene.transformer.tokenizer`.) The VQGAN is one;
code that only needs images <-> codes (`pixelscene eval vqgan`) takes any `ImageTokenizer`
and loads it with `load_tokenizer`, the one place that knows which kinds exist.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import mlx.core as mx

from pixelscene.errors import ModelLoadError

# config.json's top-level key naming a model folder's image tokenizer; absent means "vqgan".
KIND_KEY = "image_tokenizer"


@runtime_checkable
class ImageTokenizer(Protocol):
    """Images (B, 200, 320, 3) float32 in [-1, 1] <-> int codes (B, h, w) or (B, h, w, k)."""

    @property
    def codebook_size(self) -> int: ...

    def encode(self, images: mx.array) -> mx.array: ...

    def decode(self, codes: mx.array) -> mx.array: ...


def _load_vqgan(model_dir: str | os.PathLike | None) -> ImageTokenizer:
    from pixelscene.vqgan import load_vqgan

    return load_vqgan(model_dir)


def _load_categorical(model_dir: str | os.PathLike | None) -> ImageTokenizer:
    from pixelscene.imagetok import load_image_tokenizer

    return load_image_tokenizer(model_dir)


# One loader per kind: another tokenizer adds its entry here.
LOADERS: dict[str, Callable[[str | os.PathLike | None], ImageTokenizer]] = {
    "vqgan": _load_vqgan,
    "categorical": _load_categorical,
}


# Each kind's weights file in a model folder, and the weights (by name prefix) that decide
# its codes: a decoder fine-tune leaves a model's codes, and token caches made with them, valid.
WEIGHTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vqgan": ("vqgan.safetensors", ("encoder.", "quantizer.")),
    "categorical": ("tokenizer.safetensors", ("encoder.",)),
}


def weights_file(kind: str) -> str:
    """The file name of a kind's weights in a model folder."""
    return WEIGHTS[kind][0]


def tokenizer_kind(model_dir: str | os.PathLike | None = None) -> str:
    """The kind of image tokenizer a model folder holds (None: the bundled model)."""
    from pixelscene import model_io

    path = model_io.resolve_model_dir(model_dir) / "config.json"
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get(KIND_KEY, "vqgan")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"{path}: unreadable config ({e})") from None
    if kind not in LOADERS:
        known = ", ".join(LOADERS)
        raise ModelLoadError(f"{path}: unknown {KIND_KEY} {kind!r} (known: {known})")
    return kind


def load_tokenizer(model_dir: str | os.PathLike | None = None) -> ImageTokenizer:
    """Load the image tokenizer of a model folder (None: the bundled model), of the kind its
    config.json names under "image_tokenizer" (default "vqgan"), ready for inference."""
    return LOADERS[tokenizer_kind(model_dir)](model_dir)
