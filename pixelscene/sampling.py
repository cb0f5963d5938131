"""Samplers and the KV-cached generation loop.

`make_sampler(temperature, top_k, top_p)` returns `sampler(logits, gumbel) -> tokens`: the
Gumbel-max trick, `argmax(filtered(logits / T) + g)`, draws exactly from the softmax of the
filtered logits. The Gumbel noise of each image comes from its own key `mx.random.key(seed)`,
so an image's codes depend only on its prompt, seed, model and settings, not on which batch
it was generated in or in which process.

`generate_codes` writes all 260 codes for a batch of images, the conditional and
unconditional halves for classifier-free guidance in one forward pass, with one of two
engines that give the same codes:

- `mlx` (the default on a GPU): one step function, compiled once per settings, batch size
  and attention window, runs the whole batch against fixed-size KV caches. Its shapes change
  only when the attention window grows (every `WINDOW_CHUNK` tokens), so a handful of
  compiled graphs serve all 260 steps; Python only calls them.
- `numpy` (the default on MLX's CPU device): the same step outside MLX (`NumpyDecoder`):
  one compiled call per step where Numba is installed (float16 weights read as such, large
  batches split over the CPUs), else NumPy with BLAS gemv/gemm. On a 2-core CPU it is about
  4-5x as fast as `mlx` at batch 1 (`pixelscene bench sampling`). Picking the token
  (guidance, Gumbel noise) is NumPy for plain settings and the compiled MLX function shared
  with `mlx` when top-k/top-p filters are on; both engines give the same codes.

`PIXELSCENE_SAMPLER=mlx|numpy` overrides the default.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial

import mlx.core as mx
import numpy as np

from pixelscene.errors import PixelsceneError
from pixelscene.transformer.cache import StaticKVCache
from pixelscene.transformer.cpu_decode import GEMV_MAX_ROWS, NumpyDecoder
from pixelscene.transformer.model import Context, ImageTransformer

Sampler = Callable[[mx.array, mx.array], mx.array]


@dataclass
class SamplingStep:
    """Progress of `generate_codes`: codes done per image; `codes` set on the last step."""

    done: int
    total: int
    codes: np.ndarray | None = None  # (B, total) int32


def top_k_filter(logits: mx.array, k: int) -> mx.array:
    """Keep the k largest logits of each row; the rest become -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = mx.min(mx.topk(logits, k, axis=-1), axis=-1, keepdims=True)
    return mx.where(logits < kth, -mx.inf, logits)


def top_p_filter(logits: mx.array, p: float) -> mx.array:
    """Keep the smallest set of largest logits whose probability reaches p (nucleus)."""
    if p >= 1.0:
        return logits
    desc = mx.sort(logits, axis=-1)[..., ::-1]
    probs = mx.softmax(desc, axis=-1)
    mass_before = mx.cumsum(probs, axis=-1) - probs
    threshold = mx.min(mx.where(mass_before < p, desc, mx.inf), axis=-1, keepdims=True)
    return mx.where(logits < threshold, -mx.inf, logits)


def make_sampler(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Sampler:
    """`sampler(logits (B, V), gumbel (B, V)) -> tokens (B,) int32`; temperature 0 is greedy."""

    def sampler(logits: mx.array, gumbel: mx.array) -> mx.array:
        if temperature <= 0:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
        return mx.argmax(logits + gumbel, axis=-1).astype(mx.int32)

    return sampler


def gumbel_noise(seeds: list[int], length: int, vocab: int) -> mx.array:
    """(B, length, vocab) Gumbel noise, row b drawn from mx.random.key(seeds[b]) alone."""
    return mx.stack([mx.random.gumbel((length, vocab), key=mx.random.key(s)) for s in seeds])


def guided(logits: mx.array, cfg_scale: float) -> mx.array:
    """Classifier-free guidance over a batch stacked as [conditional; unconditional]."""
    cond, uncond = mx.split(logits, 2, axis=0)
    return uncond + cfg_scale * (cond - uncond)


ENGINES = ("mlx", "numpy")


def default_engine() -> str:
    """`PIXELSCENE_SAMPLER` if set, else `numpy` on MLX's CPU device and `mlx` on a GPU."""
    env = os.environ.get("PIXELSCENE_SAMPLER", "").strip().lower()
    if env:
        if env not in ENGINES:
            raise PixelsceneError(
                f"PIXELSCENE_SAMPLER must be one of {', '.join(ENGINES)}, got {env!r}"
            )
        return env
    return "numpy" if mx.default_device().type == mx.cpu else "mlx"


def _pick(sampler, cfg_scale, guide, logits, gumbel):
    """Next tokens (B,) from a step's logits (B or 2B, V) and the images' noise (B, V)."""
    if guide:
        logits = guided(logits, cfg_scale)
    return sampler(logits, gumbel)


def _step(model, sampler, cfg_scale, guide, window, tokens, offset, caches, ctx_arrays, noise):
    """One token for every image; pure in its array arguments, so it compiles."""
    n = len(model.blocks)
    cache = [StaticKVCache(caches[2 * i], caches[2 * i + 1], offset, window) for i in range(n)]
    ctx = Context.from_arrays(ctx_arrays, n)
    logits = model.decode(tokens, ctx, cache, offset)[:, -1]  # (B or 2B, V)
    nxt = _pick(sampler, cfg_scale, guide, logits, mx.take(noise, offset, axis=1)[:, 0])  # (B,)
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


def _step_fn(model, temperature, top_k, top_p, cfg_scale, window, compiled: bool) -> Callable:
    guide = cfg_scale != 1.0
    fn = partial(_step, model, make_sampler(temperature, top_k, top_p), cfg_scale, guide, window)
    if not compiled:
        return fn
    steps = _CompiledSteps.of(model)
    key = (temperature, top_k, top_p, cfg_scale, window)
    if key not in steps:
        if len(steps) >= _CompiledSteps.LIMIT:
            steps.pop(next(iter(steps)))
        steps[key] = mx.compile(fn, inputs=model.state)
    return steps[key]


_PICKERS: dict[tuple, Callable] = {}


def _pick_fn(temperature, top_k, top_p, cfg_scale) -> Callable:
    """Compiled `_pick` for the numpy engine (it holds no model, so settings are the key)."""
    key = (temperature, top_k, top_p, cfg_scale)
    if key not in _PICKERS:
        if len(_PICKERS) >= 64:
            _PICKERS.pop(next(iter(_PICKERS)))
        sampler = make_sampler(temperature, top_k, top_p)
        _PICKERS[key] = mx.compile(partial(_pick, sampler, cfg_scale, cfg_scale != 1.0))
    return _PICKERS[key]


# NumpyDecoder copies of live models: id -> (weak reference, the parameter arrays it copied,
# decoder). An entry is reused only while the model is alive and holds the same arrays.
_NUMPY_DECODERS: dict[int, tuple[weakref.ref, list, NumpyDecoder]] = {}


def numpy_decoder(model: ImageTransformer) -> NumpyDecoder:
    """The model's `NumpyDecoder`, built once and rebuilt when its weights are replaced."""
    from mlx.utils import tree_flatten

    leaves = [v for _, v in tree_flatten(model.parameters())]
    key = id(model)
    entry = _NUMPY_DECODERS.get(key)
    if entry is not None and entry[0]() is model and len(entry[1]) == len(leaves):
        if all(a is b for a, b in zip(entry[1], leaves)):
            return entry[2]
    decoder = NumpyDecoder(model)
    if entry is None:
        weakref.finalize(model, _NUMPY_DECODERS.pop, key, None)
    _NUMPY_DECODERS[key] = (weakref.ref(model), leaves, decoder)
    return decoder


def _numpy_codes(model, ctx: Context, rows, seeds, settings: dict, progress_every: int):
    """The numpy engine's loop: same inputs and outputs as the compiled MLX steps; row r
    reads caption rows[r] of ctx."""
    decoder = numpy_decoder(model)
    state = decoder.start(ctx, rows)
    guide = settings["cfg_scale"] != 1.0
    N, S, V = len(seeds), model.seq_len, model.codebook_size
    noise = gumbel_noise(seeds, S, V)
    pick = _numpy_pick(noise, **settings)
    if pick is None:  # filters: the compiled MLX pick
        mlx_pick = _pick_fn(**settings)

        def pick(logits, t):
            return np.array(mlx_pick(mx.array(logits), noise[:, t]), dtype=np.int32)

    codes = np.empty((N, S), np.int32)
    rows = 2 * N if guide else N
    tokens = np.full(rows, model.bos_id, np.int32)
    # one BLAS thread while NumPy's products are gemv; the compiled step uses no BLAS
    gemv = not decoder.jit and rows <= GEMV_MAX_ROWS
    for t in range(S):
        with _one_blas_thread() if gemv else contextlib.nullcontext():
            logits = decoder.step(state, tokens, t)  # not across the yield: the caller runs then
        nxt = pick(logits, t)
        codes[:, t] = nxt
        tokens = np.concatenate([nxt, nxt]) if guide else nxt
        if (t + 1) % progress_every == 0 and t + 1 < S:
            yield SamplingStep(t + 1, S)
    yield SamplingStep(S, S, codes)


def _numpy_pick(noise: mx.array, temperature, top_k, top_p, cfg_scale):
    """`_pick` in NumPy, `pick(logits, t) -> tokens`, for settings without top-k/top-p
    filters (the defaults), else None. Saves a round trip through MLX every token."""
    if (0 < top_k < noise.shape[-1]) or top_p < 1.0:
        return None
    gumbel = np.array(noise, dtype=np.float32)  # (N, S, V)
    scale = np.float32(cfg_scale)

    def pick(logits: np.ndarray, t: int) -> np.ndarray:
        if cfg_scale != 1.0:  # rows [conditional; unconditional], as `guided`
            half = len(logits) // 2
            cond, uncond = logits[:half], logits[half:]
            logits = uncond + scale * (cond - uncond)
        if temperature <= 0:
            return np.argmax(logits, axis=-1).astype(np.int32)
        return np.argmax(logits / np.float32(temperature) + gumbel[:, t], axis=-1).astype(np.int32)

    return pick


@cache
def _blas_controller():
    """The threadpoolctl controller, made once (finding the BLAS libraries takes ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_blas_thread():
    """One BLAS thread, for steps whose products are gemv (a second thread only adds
    synchronisation to a 256x1024 gemv: ~39 us against ~21 us on one thread here); ~12 us."""
    return _blas_controller().limit(limits=1, user_api="blas")


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
    progress_every: int = 20,
    compiled: bool = True,
    engine: str | None = None,
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
        progress_every: yield a progress step every this many codes.
        compiled: compile the mlx engine's steps (False runs them eagerly, for tests).
        engine: "mlx" or "numpy"; None picks `default_engine()`.

    Yields:
        SamplingStep(done, total); the last one carries codes (B, total) int32.
    """
    states, mask = mx.array(states), mx.array(mask).astype(mx.bool_)
    N, P = len(seeds), states.shape[0]
    if N == 0 or N % P:
        raise ValueError(f"{N} seeds for {P} prompts: need a positive multiple")
    engine = default_engine() if engine is None else engine
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    guide = cfg_scale != 1.0
    # rows: prompt i's n images, then (with guidance) as many unconditional rows
    rows = np.repeat(np.arange(P), N // P)
    if guide:  # unconditional half: no real tokens, so the learned null state
        rows = np.concatenate([rows, np.full(N, P)])
        states = mx.concatenate([states, mx.zeros_like(states[:1])])
        mask = mx.concatenate([mask, mx.zeros_like(mask[:1])])
    S, V = model.seq_len, model.codebook_size
    was_training = model.training
    model.eval()
    try:
        if engine == "numpy":  # each caption's context once; the decoder maps rows to them
            settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale)
            yield from _numpy_codes(
                model, model.context(states, mask), rows, seeds, settings, progress_every
            )
            return
        if len(rows) != len(states):  # the MLX steps take one context row per row
            take = mx.array(rows)
            states, mask = states[take], mask[take]
        ctx_arrays = model.context(states, mask).arrays()
        B, H, d = states.shape[0], model.num_heads, model.cfg.embed_dim // model.num_heads
        empty = StaticKVCache.empty(B, H, S, d)
        caches = [mx.zeros_like(empty.keys) for _ in range(2 * len(model.blocks))]
        noise = gumbel_noise(seeds, S, V)
        tokens = mx.full((B, 1), model.bos_id, dtype=mx.int32)
        offsets = [mx.array([t], mx.int32) for t in range(S)]
        wins = [attention_window(t, S) for t in range(S)]
        mx.eval(ctx_arrays, caches, noise)
        steps = {
            w: _step_fn(model, temperature, top_k, top_p, cfg_scale, w, compiled) for w in set(wins)
        }
        out = []
        for t in range(S):
            step = steps[wins[t]]
            nxt, tokens, caches = step(tokens, offsets[t], caches, ctx_arrays, noise)
            out.append(nxt)
            mx.async_eval(nxt, tokens, caches)
            if (t + 1) % progress_every == 0 and t + 1 < S:
                mx.eval(nxt)
                yield SamplingStep(t + 1, S)
        codes = mx.stack(out, axis=1)
        mx.eval(codes)
        yield SamplingStep(S, S, np.array(codes, dtype=np.int32))
    finally:
        if was_training:
            model.train()


def sample_codes(model: ImageTransformer, states, mask, **kwargs) -> np.ndarray:
    """Run `generate_codes` to the end and return the codes (B, 260) int32."""
    for step in generate_codes(model, states, mask, **kwargs):
        if step.codes is not None:
            return step.codes
    raise RuntimeError("generation ended without codes")
