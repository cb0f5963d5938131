"""One loaded model that turns prompts into images: the entry point of the CLI and the workers.

    scene = PixelScene.load()                      # the bundled model, loaded once
    for step in scene.iter_generate(["a castle at sunset"], n=4, seed=7):
        print(step.done, "/", step.total)          # progress; the last step has the images
    images = step.images

Image j of prompt i gets seed `seed + i*n + j`; the sampler draws each image's noise from
its own seed, so an image is the same whichever batch it was generated in.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from pixelscene import model_io
from pixelscene.config import Config, SamplingConfig
from pixelscene.data.datasets import to_uint8
from pixelscene.errors import ModelLoadError, PixelsceneError

MAX_SEED = 2**63 - 1


class GenerationError(PixelsceneError):
    """Invalid generation input: prompts, counts, seeds, sampler settings or codes."""


@dataclass
class GeneratedImage:
    prompt: str
    seed: int
    codes: np.ndarray  # int32 in the image tokenizer's shape: (13, 20) for the VQGAN
    pixels: np.ndarray  # (200, 320, 3) uint8


@dataclass
class GenerationStep:
    """Yielded by `PixelScene.iter_generate`: progress, and the images on the last step."""

    done: int  # codes done so far over all images
    total: int
    images: list[GeneratedImage] | None = None


def model_files(cfg: Config) -> list[str]:
    """The files a complete model folder holds besides config.json."""
    from pixelscene.image_tokenizers import weights_file

    files = [weights_file(cfg.image_tokenizer), "transformer.safetensors"]
    if cfg.transformer.text_encoder == "learned":
        files.append("tokenizer.json")
    return files


def check_model_dir(model_dir: str | os.PathLike | None) -> tuple[Path, Config]:
    """A model folder's path (None: the bundled model) and config, without loading weights;
    an unreadable config or a missing file raises ModelLoadError."""
    path = model_io.resolve_model_dir(model_dir)
    cfg = model_io.load_model_config(path)
    missing = [f for f in model_files(cfg) if not (path / f).is_file()]
    if missing:
        hint = ""
        if missing == ["transformer.safetensors"]:
            hint = " (a tokenizer-only folder: train the transformer into it with `pixelscene train transformer`)"
        raise ModelLoadError(f"{path} is not a complete model: missing {', '.join(missing)}{hint}")
    return path, cfg


class PixelScene:
    """A model folder loaded once: image tokenizer (a VQGAN or the categorical tokenizer:
    `vqgan` holds either) + transformer + text encoder/tokenizer + config."""

    def __init__(
        self,
        model_dir: Path,
        config: Config,
        vqgan,
        transformer,
        tokenizer,
        text_encoder=None,
        engine: str = "auto",
    ):
        from pixelscene.sampling import resolve_engine

        self.model_dir = Path(model_dir)
        self.config = config
        self.name = config.name
        self.version = model_io.model_version(self.model_dir)
        self.vqgan = vqgan
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        layout = config.token_layout()
        self.codes_shape: tuple[int, ...] = layout.shape  # one image's codes
        self.grid_size: tuple[int, int] = layout.grid
        self.codebook_size = layout.vocab
        self.engine = resolve_engine(engine)  # "cpu" or "mlx": every batch samples with it

    @classmethod
    def load(cls, model_dir: str | os.PathLike | None = None, engine: str = "auto") -> PixelScene:
        """Load a model folder; incomplete folders raise ModelLoadError.

        Args:
            model_dir: the folder (None = the bundled model).
            engine: the sampling engine, "auto" (cpu on MLX's CPU device, mlx on a GPU),
                "cpu" or "mlx"; chosen here, once.
        """
        from pixelscene.image_tokenizers import LOADERS
        from pixelscene.transformer.model import build_transformer

        path, cfg = check_model_dir(model_dir)
        vqgan = LOADERS[cfg.image_tokenizer](path)
        transformer = build_transformer(cfg)
        model_io.load_weights(path / "transformer.safetensors", transformer)
        transformer.eval()
        tokenizer = text_encoder = None
        if cfg.transformer.text_encoder == "learned":
            from pixelscene.transformer.tokenizer import Tokenizer

            tokenizer = Tokenizer.load(path / "tokenizer.json")
        else:
            from pixelscene.transformer.minilm import MiniLMEncoder

            text_encoder = MiniLMEncoder.load()
        return cls(path, cfg, vqgan, transformer, tokenizer, text_encoder, engine)

    def warm_up(self) -> None:
        """Have the sampling engine ready before the first image (the cpu engine compiles its
        step the first time on a machine, about 10 s)."""
        from pixelscene.sampling import warm_up

        warm_up(self.engine)

    # ------------------------------------------------------------------------- settings

    def resolve_settings(
        self, temperature=None, top_k=None, top_p=None, cfg_scale=None
    ) -> dict[str, Any]:
        """Sampler settings with config.sampling defaults filled in, validated."""
        d = self.config.sampling
        settings = SamplingConfig(
            temperature=float(d.temperature if temperature is None else temperature),
            top_k=int(d.top_k if top_k is None else top_k),
            top_p=float(d.top_p if top_p is None else top_p),
            cfg_scale=float(d.cfg_scale if cfg_scale is None else cfg_scale),
        )
        try:
            settings.validate("")
        except ValueError as e:
            raise GenerationError(str(e).lstrip(".")) from None
        return {
            "temperature": settings.temperature,
            "top_k": settings.top_k,
            "top_p": settings.top_p,
            "cfg_scale": settings.cfg_scale,
        }

    # ------------------------------------------------------------------------- generation

    def encode_prompts(self, prompts: list[str]) -> tuple[mx.array, mx.array]:
        """Caption states (B, L, D) and mask (B, L) for the transformer."""
        if self.tokenizer is not None:
            ids, mask = self.tokenizer.encode_batch(list(prompts))
            return self.transformer.encode_text(mx.array(ids), mx.array(mask))
        return self.text_encoder.encode(list(prompts), max_len=self.config.transformer.max_text_len)

    def iter_generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        seed: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float | None = None,
        batch_size: int = 8,
    ) -> Iterator[GenerationStep]:
        """Generate n images per prompt, yielding progress and finally the images.

        Args:
            prompts: the texts ("" is the unconditional prompt).
            n: images per prompt.
            seed: base seed; image j of prompt i gets seed + i*n + j. None draws one.
            temperature, top_k, top_p, cfg_scale: sampler settings (None = config.sampling).
            batch_size: images sampled together.
        Yields:
            GenerationStep(done, total) every 20 codes of every batch, then a last
            step with done == total and `images` (prompt-major order). Stop iterating (or call
            close()) to stop early; no further batches are sampled.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise GenerationError("prompts must be a list of strings")
        if not prompts:
            raise GenerationError("no prompts given")
        if int(n) < 1:
            raise GenerationError(f"n must be >= 1, got {n}")
        if int(batch_size) < 1:
            raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
        settings = self.resolve_settings(temperature, top_k, top_p, cfg_scale)
        if seed is None:
            seed = secrets.randbelow(2**31)
        seed = int(seed)
        jobs = [(p, seed + i * n + j) for i, p in enumerate(prompts) for j in range(n)]
        if seed < 0 or jobs[-1][1] > MAX_SEED:
            raise GenerationError(f"seed must be in 0..{MAX_SEED - len(jobs) + 1}, got {seed}")
        return self._iter_jobs(jobs, settings, int(batch_size))

    def _iter_jobs(self, jobs, settings, batch_size) -> Iterator[GenerationStep]:
        from pixelscene.sampling import generate_codes

        per_image = math.prod(self.codes_shape)
        total = len(jobs) * per_image
        done = 0
        images: list[GeneratedImage] = []
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            states, mask = self.encode_prompts([p for p, _ in batch])
            codes = None
            with contextlib.closing(
                generate_codes(
                    self.transformer,
                    states,
                    mask,
                    seeds=[s for _, s in batch],
                    engine=self.engine,
                    noise=self.config.sampling.noise,
                    **settings,
                )
            ) as steps:
                for step in steps:
                    if step.codes is not None:
                        codes = step.codes
                        continue
                    yield GenerationStep(done + step.done * len(batch), total)
            grids = np.asarray(codes, dtype=np.int32).reshape(len(batch), *self.codes_shape)
            pixels = self.decode_codes(grids)
            images += [GeneratedImage(p, s, grids[k], pixels[k]) for k, (p, s) in enumerate(batch)]
            done += len(batch) * per_image
        yield GenerationStep(total, total, images)

    def generate(self, prompts: list[str], **kw) -> list[GeneratedImage]:
        """Run `iter_generate` to the end and return its images."""
        images = None
        for step in self.iter_generate(prompts, **kw):
            images = step.images
        return images

    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """One image's codes (`codes_shape`: (13, 20) for the VQGAN) or a batch of them ->
        uint8 (200, 320, 3) or (B, 200, 320, 3) pixels."""
        codes = np.asarray(codes)
        shape = self.codes_shape
        single = codes.ndim == len(shape)
        if single:
            codes = codes[None]
        if codes.ndim != len(shape) + 1 or tuple(codes.shape[1:]) != shape:
            raise GenerationError(
                f"codes must have shape {shape} or (B, {', '.join(map(str, shape))}), "
                f"got {codes.shape}"
            )
        if not np.issubdtype(codes.dtype, np.integer):
            raise GenerationError(f"codes must be integers, got {codes.dtype}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise GenerationError(
                f"codes must be in 0..{self.codebook_size - 1}, found {int(codes.min())}..{int(codes.max())}"
            )
        # One image at a time: a batched decode rounds differently with the batch size (BLAS
        # blocking), and an image must decode to the same pixels wherever it is decoded.
        out = []
        for grid in codes.astype(np.int32):
            img = self.vqgan.decode(mx.array(grid[None]))
            mx.eval(img)
            out.append(to_uint8(img))
        pixels = np.concatenate(out)
        return pixels[0] if single else pixels
