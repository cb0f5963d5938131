"""The generation loop: all 260 codes of a batch of images, with one of two engines.

`generate_codes` writes the codes of a batch, the conditional and unconditional halves for
classifier-free guidance in one forward pass, with the engine its caller chose:

- `mlx` (`mlx_engine.py`): compiled MLX steps; the one for a GPU.
- `cpu` (`cpu_engine.py`): the same step outside MLX, one Numba-compiled call per step;
  several times as fast on MLX's CPU device.

Both give the same codes. `auto` is `cpu` on MLX's CPU device and `mlx` on a GPU; callers
choose once (`PixelScene.load(..., engine=...)`, from a flag or a setting) and pass it here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from pixelscene.errors import PixelsceneError
from pixelscene.sampling import cpu_engine
from pixelscene.sampling.mlx_engine import mlx_codes
from pixelscene.transformer.model import ImageTransformer

ENGINES = ("cpu", "mlx")


@dataclass
class SamplingStep:
    """Progress of `generate_codes`: codes done per image; `codes` set on the last step."""

    done: int
    total: int
    codes: np.ndarray | None = None  # (B, total) int32


def resolve_engine(engine: str = "auto") -> str:
    """ "cpu" or "mlx" for an engine name; "auto" is cpu on MLX's CPU device, mlx on a GPU."""
    name = str(engine).strip().lower()
    if name == "auto":
        return "cpu" if mx.default_device().type == mx.cpu else "mlx"
    if name not in ENGINES:
        raise PixelsceneError(f"engine must be one of auto, {', '.join(ENGINES)}, got {engine!r}")
    return name


def warm_up(engine: str = "auto") -> None:
    """Have an engine ready before the first image: the cpu engine checks its thread setting
    and compiles its step (about 10 s the first time on a machine); mlx needs nothing."""
    if resolve_engine(engine) == "cpu":
        cpu_engine.warm_up()


def generate_codes(
    model: ImageTransformer,
    states: mx.array,
    mask: mx.array,
    *,
    seeds: list[int],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    cfg_scale: float = 3.0,
    noise: str = "gumbel",
    progress_every: int = 20,
    compiled: bool = True,
    engine: str = "auto",
) -> Iterator[SamplingStep]:
    """Write all codes of len(seeds) images in one batched pass, yielding progress.

    Args:
        model: the transformer (put in eval mode for the duration).
        states, mask: caption states (P, L, D) and mask (P, L) from `model.encode_text` (or an
            external encoder); with P prompts and len(seeds) = P * n, image j of prompt i is
            row i * n + j.
        seeds: one seed per image; an image's codes depend only on its own seed.
        temperature, top_k, top_p: sampler settings (top_k 0 and top_p 1 disable them).
        cfg_scale: classifier-free guidance; 1 turns the unconditional branch off.
        noise: "gumbel" or "uniform": how tokens are drawn (`samplers`; the model's
            `config.sampling.noise`).
        progress_every: yield a progress step every this many codes.
        compiled: compile the mlx engine's steps (False runs them eagerly, for tests).
        engine: "auto", "cpu" or "mlx" (see `resolve_engine`).

    Yields:
        SamplingStep(done, total); the last one carries codes (B, total) int32.
    """
    states, mask = mx.array(states), mx.array(mask).astype(mx.bool_)
    N, P = len(seeds), states.shape[0]
    if N == 0 or N % P:
        raise ValueError(f"{N} seeds for {P} prompts: need a positive multiple")
    engine = resolve_engine(engine)
    settings = dict(
        temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale, noise=noise
    )
    # rows: prompt i's n images, then (with guidance) as many unconditional rows
    rows = np.repeat(np.arange(P), N // P)
    if cfg_scale != 1.0:  # unconditional half: no real tokens, so the learned null state
        rows = np.concatenate([rows, np.full(N, P)])
        states = mx.concatenate([states, mx.zeros_like(states[:1])])
        mask = mx.concatenate([mask, mx.zeros_like(mask[:1])])
    S = model.seq_len
    was_training = model.training
    model.eval()
    try:
        if engine == "cpu":  # each caption's context once; the decoder maps rows to them
            ctx = model.context(states, mask)
            loop = cpu_engine.cpu_codes(model, ctx, rows, seeds, settings, progress_every)
        else:
            loop = mlx_codes(model, states, mask, rows, seeds, settings, progress_every, compiled)
        for done, codes in loop:
            yield SamplingStep(done, S, codes)
    finally:
        if was_training:
            model.train()


def sample_codes(model: ImageTransformer, states, mask, **kwargs) -> np.ndarray:
    """Run `generate_codes` to the end and return the codes (B, 260) int32."""
    for step in generate_codes(model, states, mask, **kwargs):
        if step.codes is not None:
            return step.codes
    raise RuntimeError("generation ended without codes")
