"""Where a batch's sampling time goes, for `pixelscene bench sampling --profile`.

A step's products cost the same at every position, while its read of the self-attention
cache grows with the position: the first positions time the products, and the last add the
read of a full cache. `batch_profile` sets those step times beside the products' arithmetic
and the cache's bytes (both from the model's sizes) and this machine's memory read speed.
`products_gflop_per_s_first` divides the products' arithmetic by the whole step time at the
first positions, the step's other work included, so the products alone run at least as fast.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np

from pixelscene.sampling.cpu_engine import LINEARS, sampler_threads
from pixelscene.sampling.generate import generate_codes


@cache
def _summer():
    """A compiled sum of a float32 vector that releases the GIL (Numba, built on first use)."""
    import numba as nb

    @nb.njit(fastmath=True, nogil=True)
    def total(x):
        acc = np.float32(0.0)
        for i in range(x.shape[0]):
            acc += x[i]
        return acc

    return total


def memory_read_gb_per_s(threads: int, megabytes: int = 256, repeats: int = 3) -> float:
    """GB/s read from memory by `threads` threads, each summing its part of one array far
    larger than any cache: the fastest of `repeats` passes."""
    data = np.ones(megabytes * 2**20 // 4, np.float32)
    parts = np.array_split(data, max(1, threads))
    total = _summer()
    total(parts[0][:16])  # compiled outside the timing
    best = float("inf")
    with ThreadPoolExecutor(len(parts)) as pool:
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            list(pool.map(total, parts))
            best = min(best, time.perf_counter() - t0)
    return data.nbytes / best / 1e9


def step_times(model, states, mask, batch: int, settings: dict) -> np.ndarray:
    """Seconds of each sampling step (seq_len,) of one run at this batch size."""
    seeds = list(range(batch))
    stamps = [time.perf_counter()]
    for _ in generate_codes(model, states, mask, seeds=seeds, progress_every=1, **settings):
        stamps.append(time.perf_counter())
    return np.diff(stamps)


def decoder_sizes(model) -> tuple[int, int]:
    """(weights a row multiplies at each position, floats each position adds to one row's
    self-attention cache): the products' multiply-adds and the cache's growth per step."""
    linears = [model.head] + [get(block) for block in model.blocks for _, get in LINEARS]
    return sum(m.weight.size for m in linears), 2 * len(model.blocks) * model.cfg.embed_dim


def batch_profile(model, states, mask, batch: int, settings: dict) -> dict:
    """One more run at this batch size, timed step by step, set beside the products'
    arithmetic, the float32 cache's bytes and (on MLX's CPU device) the memory read speed
    with as many threads as the cpu engine steps on."""
    import mlx.core as mx

    S = model.seq_len
    per_image = 2 if settings["cfg_scale"] != 1.0 else 1  # guidance: two rows per image
    rows = batch * per_image
    weights, floats_per_position = decoder_sizes(model)
    steps = step_times(model, states, mask, batch, settings)
    k = max(1, min(8, S // 8))
    first = float(np.median(steps[1 : 1 + k]))  # step 0 also sets the batch up
    last = float(np.median(steps[S - 1 - k : S - 1]))  # the final one also gathers the codes
    flop = 2 * weights * rows
    # step t reads positions 0..t of each row's cache
    cache_bytes = 4 * floats_per_position * per_image * S * (S + 1) // 2
    figures = {
        "s_per_image_this_run": float(steps.sum()) / batch,
        "step_ms_first": first * 1e3,
        "step_ms_last": last * 1e3,
        "products_gflop_per_step": flop / 1e9,
        "products_gflop_per_s_first": flop / first / 1e9,
        "cache_mb_last_step": 4 * floats_per_position * rows * S / 2**20,
        "cache_mb_read_per_image": cache_bytes / 2**20,
    }
    if mx.default_device().type == mx.cpu:  # the host's memory speed says nothing of a GPU's
        speed = memory_read_gb_per_s(sampler_threads())
        figures["memory_read_gb_per_s"] = speed
        figures["cache_read_s_per_image_at_memory_speed"] = cache_bytes / speed / 1e9
    return {"batch": batch, "rows": rows} | {k: float(f"{v:.4g}") for k, v in figures.items()}
