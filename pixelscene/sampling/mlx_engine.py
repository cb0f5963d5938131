"""The `mlx` engine: compiled MLX sampling steps against fixed-size KV caches.

One step function, compiled once per settings, batch size and attention window, runs the
whole batch. Its shapes change only when the attention window grows (every `WINDOW_CHUNK`
tokens), so a handful of compiled graphs serve all 260 steps; Python only calls them. The
default engine on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import mlx.core as mx
import numpy as np

from pixelscene.sampling.samplers import make_noise, make_sampler, pick
from pixelscene.transformer.cache import StaticKVCache
from pixelscene.transformer.model import Context, ImageTransformer

# Self-attention of a sampling step reads the filled prefix rounded up to this many slots
# (64, 128, ..., 260: five compiled graphs), not all 260: batched steps spend most of their
# time there.
WINDOW_CHUNK = 64


def attention_window(t: int, length: int, chunk: int | None = None) -> int:
    """Cache slots the token at position t attends over: t + 1 rounded up to a chunk."""
    chunk = WINDOW_CHUNK if chunk is None else chunk
    if chunk <= 0:
        return length
    return min(length, -(-(t + 1) // chunk) * chunk)


def _step(
    model, sampler, cfg_scale, guide, window, grid, tokens, offset, caches, ctx_arrays, noise
):
    """One token for every image (noise: the images' noise at this position, (B, V) Gumbel or
    (B,) uniform values, or (B, digits) for a digits head; grid: the position is one of a
    digits head's grid codes); pure in its array arguments, so it compiles."""
    n = len(model.blocks)
    cache = [StaticKVCache(caches[2 * i], caches[2 * i + 1], offset, window) for i in range(n)]
    ctx = Context.from_arrays(ctx_arrays, n)
    if model.digits:
        h = model.hidden(tokens, ctx, cache, offset)[:, -1]  # (B or 2B, dim)
        if grid:
            nxt = model.digit_head.sample(
                h, lambda k, lg: pick(sampler, cfg_scale, guide, lg, noise[:, k]), guide
            )
        else:
            nxt = pick(sampler, cfg_scale, guide, model.head(h), noise[:, 0]) + model.rest_low
    else:
        logits = model.decode(tokens, ctx, cache, offset)[:, -1]  # (B or 2B, V)
        nxt = pick(sampler, cfg_scale, guide, logits, noise)  # (B,)
    feed = mx.concatenate([nxt, nxt]) if guide else nxt
    new_caches = [a for c in cache for a in (c.keys, c.values)]
    return nxt, feed[:, None], new_caches


class _CompiledSteps(dict):
    """A model's compiled sampling steps, (settings, window) -> step.

    Kept on the model as a plain attribute (not a parameter): a step's closure holds its
    model, so a module-level cache would keep every model it ever compiled for alive, while
    this one goes with the model (the cycle is collected)."""

    LIMIT = 64

    @classmethod
    def of(cls, model: ImageTransformer) -> _CompiledSteps:
        steps = model.__dict__.get("_compiled_steps")
        if steps is None:
            steps = cls()
            object.__setattr__(model, "_compiled_steps", steps)  # bypass Module's parameter dict
        return steps


def _step_fn(
    model, temperature, top_k, top_p, cfg_scale, noise, window, grid, compiled: bool
) -> Callable:
    guide = cfg_scale != 1.0
    sampler = make_sampler(temperature, top_k, top_p, noise)
    fn = partial(_step, model, sampler, cfg_scale, guide, window, grid)
    if not compiled:
        return fn
    steps = _CompiledSteps.of(model)
    key = (temperature, top_k, top_p, cfg_scale, noise, window, grid)
    if key not in steps:
        if len(steps) >= _CompiledSteps.LIMIT:
            steps.pop(next(iter(steps)))
        steps[key] = mx.compile(fn, inputs=model.state)
    return steps[key]


def mlx_codes(
    model: ImageTransformer,
    states: mx.array,
    mask: mx.array,
    rows: np.ndarray,
    seeds: list[int],
    settings: dict,
    progress_every: int,
    compiled: bool,
) -> Iterator[tuple[int, np.ndarray | None]]:
    """The mlx engine's loop: yields (codes done, None), then (total, codes (B, total)
    int32). Row r reads caption rows[r]."""
    if len(rows) != len(states):  # the steps take one context row per row
        take = mx.array(rows)
        states, mask = states[take], mask[take]
    ctx_arrays = model.context(states, mask).arrays()
    S, V = model.seq_len, model.codebook_size
    B, H, d = states.shape[0], model.num_heads, model.cfg.embed_dim // model.num_heads
    empty = StaticKVCache.empty(B, H, S, d)
    caches = [mx.zeros_like(empty.keys) for _ in range(2 * len(model.blocks))]
    draws = len(model.digit_head.levels) if model.digits else 1
    noise = make_noise(settings["noise"], seeds, S, V, draws)
    tokens = mx.full((B, 1), model.bos_id, dtype=mx.int32)
    offsets = [mx.array([t], mx.int32) for t in range(S)]
    # (attention window, digits head's grid position) of each step: one compiled step each
    kinds = [(attention_window(t, S), model.digits and t >= model.grid_start) for t in range(S)]
    mx.eval(ctx_arrays, caches)
    steps = {
        (w, g): _step_fn(model, **settings, window=w, grid=g, compiled=compiled)
        for w, g in set(kinds)
    }
    out = []
    for t in range(S):
        step = steps[kinds[t]]
        nxt, tokens, caches = step(tokens, offsets[t], caches, ctx_arrays, noise.at(t))
        out.append(nxt)
        mx.async_eval(nxt, tokens, caches)
        if (t + 1) % progress_every == 0 and t + 1 < S:
            mx.eval(nxt)
            yield t + 1, None
    codes = mx.stack(out, axis=1)
    mx.eval(codes)
    yield S, np.array(codes, dtype=np.int32)
