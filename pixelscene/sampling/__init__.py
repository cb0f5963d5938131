"""Sampling codes from the transformer: samplers, the generation loop and its two engines.

- `samplers.py`: `make_sampler`, the top-k/top-p filters, per-seed Gumbel noise, guidance.
- `generate.py`: `generate_codes`/`sample_codes`, the loop every caller uses, and the
  engine names (`resolve_engine`).
- `mlx_engine.py`: compiled MLX steps (the engine on a GPU).
- `cpu_engine.py`: the decoding step outside MLX (the engine on MLX's CPU device), and
  `cpu_kernels.py`, its step compiled by Numba. Nothing outside this package imports them
  (`sampler_threads`, the threads the engine may use, is exported here).
- `profile.py`: where a batch's time goes, for `pixelscene bench sampling --profile`.
"""

from pixelscene.sampling.cpu_engine import sampler_threads
from pixelscene.sampling.generate import (
    ENGINES,
    SamplingStep,
    generate_codes,
    resolve_engine,
    sample_codes,
    warm_up,
)
from pixelscene.sampling.mlx_engine import WINDOW_CHUNK, attention_window
from pixelscene.sampling.samplers import (
    GumbelNoise,
    Sampler,
    guided,
    gumbel_noise,
    make_sampler,
    top_k_filter,
    top_p_filter,
)

__all__ = [
    "ENGINES",
    "GumbelNoise",
    "WINDOW_CHUNK",
    "Sampler",
    "SamplingStep",
    "attention_window",
    "generate_codes",
    "guided",
    "gumbel_noise",
    "make_sampler",
    "resolve_engine",
    "sample_codes",
    "sampler_threads",
    "top_k_filter",
    "top_p_filter",
    "warm_up",
]
