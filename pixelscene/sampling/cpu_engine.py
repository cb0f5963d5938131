"""The `cpu` engine: the transformer's decoding step outside MLX, one compiled call per step.

A decoding step multiplies one or two rows per image (conditional and unconditional) by
every weight matrix. MLX's CPU backend sends each of those products through sgemm, which
spends most of its time packing the weight matrix (about 25 us for a 256x256 float32
matrix on one core), and a step at batch 1 is then bound by those calls, not by reading
the weights. `CpuDecoder` runs the same step on weights copied out of the model once:

- as one call compiled by Numba (`cpu_kernels.step`): each weight row read once for all
  rows, float16 weights converted while being read (see there); a batch of
  `PARALLEL_MIN_ROWS` rows or more is split over the CPUs, one part per thread;
- the self-attention keys/values live in preallocated (B, H, d, S) buffers, transposed so
  that attention's loops run over contiguous positions, and a step attends over exactly the
  positions written so far;
- the caption's cross-attention keys/values and mask come from `ImageTransformer.context`
  (MLX), computed once per prompt batch.

Logits agree with `ImageTransformer.decode` to float32 rounding (tests check 1e-4). Where a
position may take only some tokens (`ImageTransformer.token_ranges`: a palette slot takes 65
of 15,425) the head computes and the pick reads only theirs. Picking the token (guidance,
noise) is compiled for uniform noise, NumPy for Gumbel noise, and the compiled MLX pick of
the mlx engine when top-k/top-p filters are on; both engines give the same codes. On a
2-core CPU this engine is about 4-5x as fast as `mlx` at batch 1 (`pixelscene bench
sampling`): the default on MLX's CPU device.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial

import mlx.core as mx
import numpy as np

from pixelscene.errors import PixelsceneError
from pixelscene.sampling.samplers import make_noise, make_sampler, pick
from pixelscene.transformer.digits import NumpyDigitHead
from pixelscene.transformer.model import Context, ImageTransformer
from pixelscene.transformer.text_encoder import NEG_INF

log = logging.getLogger(__name__)


@cache
def digit_kernels():
    """The `digit_kernels` module, imported on first use (as `kernels`)."""
    from pixelscene.sampling import digit_kernels

    return digit_kernels


@cache
def kernels():
    """The `cpu_kernels` module, imported on first use: Numba and LLVM add ~120 MB to a
    process, which a worker sampling with MLX on a GPU does not need."""
    from pixelscene.sampling import cpu_kernels

    return cpu_kernels


# From this many rows the compiled step splits the batch over the CPUs, one thread each.
PARALLEL_MIN_ROWS = 8


def sampler_threads() -> int:
    """Threads the compiled step may use: `PIXELSCENE_SAMPLER_THREADS`, else the CPUs this
    process may run on (`pixelscene up --workers N` gives each worker its share)."""
    value = os.environ.get("PIXELSCENE_SAMPLER_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise PixelsceneError(
                f"PIXELSCENE_SAMPLER_THREADS must be a positive whole number, got {value!r}"
            )
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@cache
def _pool() -> ThreadPoolExecutor:
    """Threads for the parts of a batch after the first (the caller steps that one)."""
    return ThreadPoolExecutor(max(1, sampler_threads() - 1), thread_name_prefix="pixelscene-decode")


# A block's linear layers in `cpu_kernels.step`'s argument order.
LINEARS = (
    ("qkv", lambda b: b.self_attn.qkv),
    ("proj", lambda b: b.self_attn.proj),
    ("cross_q", lambda b: b.cross_attn.q),
    ("cross_proj", lambda b: b.cross_attn.proj),
    ("fc1", lambda b: b.mlp.fc1),
    ("fc2", lambda b: b.mlp.fc2),
)


def warm_up() -> None:
    """Check `PIXELSCENE_SAMPLER_THREADS` and have the compiled step ready (compiled, or
    loaded from Numba's on-disk cache): about 10 s the first time on a machine, under a
    second after."""
    sampler_threads()
    t0 = time.perf_counter()
    kernels().warm_up()
    digit_kernels().warm_up()
    seconds = time.perf_counter() - t0
    if seconds > 3:
        log.info("compiled the CPU sampler in %.0f s; later runs load it from disk", seconds)


def _np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32), dtype=np.float32)


def _affine(norm, dim: int) -> np.ndarray:
    """A LayerNorm's (scale, shift) as (2, dim); identity where it has none."""
    g = _np(norm.weight) if "weight" in norm else np.ones(dim, np.float32)
    s = _np(norm.bias) if "bias" in norm else np.zeros(dim, np.float32)
    return np.stack([g, s])


def _weights(linear) -> tuple[np.ndarray, np.ndarray]:
    """(w (out, in), b (out,)) of y = x @ w.T + b."""
    w = _np(linear.weight)
    b = _np(linear.bias) if "bias" in linear else np.zeros(w.shape[0], np.float32)
    return w, b


def _as_half_bits(w: np.ndarray) -> np.ndarray | None:
    """w's float16 bits (as int16) when float16 holds every value exactly, else None."""
    half = w.astype(np.float16)
    return half.view(np.int16) if np.array_equal(half.astype(np.float32), w) else None


class CpuDecoder:
    """A frozen copy of an `ImageTransformer`'s decoder that steps on the CPU.

    Usage: `state = dec.start(ctx)` for a batch's `Context` (rows in the same order as the
    tokens), then `logits = dec.step(state, tokens, t)` for t = 0, 1, ... with the token
    (B,) int at position t (BOS first). Weights are copied at construction: rebuild after
    the model's weights change. The step keeps weights as float16 bits (int16) where float16
    holds them exactly; `half=False` keeps them float32.
    """

    def __init__(self, model: ImageTransformer, half: bool | None = None):
        self.dim = model.cfg.embed_dim
        self.heads = model.num_heads
        self.head_dim = self.dim // self.heads
        self.seq_len = model.seq_len
        self.eps = float(model.norm.eps)
        self.token_embedding = _np(model.input_table())
        self.pos_embedding = _np(model.pos_embedding)
        blocks = model.blocks
        # (layers, 3, 2, dim): norm1..norm3 of each block, (scale, shift)
        self.norms = np.stack(
            [np.stack([_affine(n, self.dim) for n in (b.norm1, b.norm2, b.norm3)]) for b in blocks]
        )
        self.final_norm = _affine(model.norm, self.dim)
        # name -> (w (layers, out, in), b (layers, out)), contiguous
        self.layers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, get in LINEARS:
            pairs = [_weights(get(b)) for b in blocks]
            self.layers[name] = (np.stack([w for w, _ in pairs]), np.stack([b for _, b in pairs]))
        self.head = _weights(model.head)
        self.rest_low = model.rest_low  # the head's first row scores this token
        # a digits head's grid codes are drawn from the final states (`digit_head`)
        self.digit_head = NumpyDigitHead(model.digit_head) if model.digits else None
        self._digit_arrays = None
        # float16 bits where that loses nothing (a model loaded from its float16 file): one
        # copy of the weights, half the bytes per step.
        self.half = False
        if half is not False:
            halves = [_as_half_bits(w) for w, _ in [*self.layers.values(), self.head]]
            if all(h is not None for h in halves):
                *layer_halves, head_half = halves
                self.layers = {
                    name: (h, b) for h, (name, (_, b)) in zip(layer_halves, self.layers.items())
                }
                self.head = (head_half, self.head[1])
                self.half = True
        # `cpu_kernels.step`'s weight arguments before the head's, in order
        self._layer_weights = [a for pair in self.layers.values() for a in pair]
        # a "head" that returns the final states unchanged (x @ I.T + 0 is exactly x), in the
        # weights' format
        eye = np.eye(self.dim, dtype=np.float32)
        self._identity = (eye.astype(np.float16).view(np.int16) if self.half else eye,
                          np.zeros(self.dim, np.float32))  # fmt: skip

    def digit_arrays(self) -> tuple:
        """The digits head's arrays as `digit_kernels.sample_digits` takes them (built once)."""
        if self._digit_arrays is None:
            self._digit_arrays = digit_kernels().pack(self.digit_head)
        return self._digit_arrays

    @property
    def num_layers(self) -> int:
        return len(self.norms)

    def start(self, ctx: Context, rows=None) -> dict:
        """Per-batch state: empty self-attention caches and the captions' keys/values.

        `rows` (B,) gives each row's caption in ctx, so that a caption shared by many rows
        (n images of a prompt; every unconditional row) is computed and stored once; None:
        row i reads caption i. The step reads each caption once for all the rows of a part
        that share it, up to its last unmasked position. A batch of `PARALLEL_MIN_ROWS` rows
        or more is split into one part per CPU; each part has its own contiguous arrays and
        steps on its own thread."""
        # (layers, C, H, d, L): transposed, as the step reads keys/values
        cross_k = np.stack([_np(k) for k, _ in ctx.kv]).swapaxes(3, 4)
        cross_v = np.stack([_np(v) for _, v in ctx.kv]).swapaxes(3, 4)
        bias = _np(ctx.bias)[:, 0, 0, :]  # (C, L)
        rows = np.arange(len(bias)) if rows is None else np.asarray(rows, np.intp)
        if rows.ndim != 1 or len(rows) == 0 or rows.min() < 0 or rows.max() >= len(bias):
            raise ValueError(f"rows must index the context's {len(bias)} captions")
        B = len(rows)
        parts = 1
        if B >= PARALLEL_MIN_ROWS:
            parts = min(sampler_threads(), B // (PARALLEL_MIN_ROWS // 2))
        bounds = [B * i // parts for i in range(parts + 1)]
        return {
            "pooled": None if ctx.pooled is None else _np(ctx.pooled)[rows, 0],  # (B, dim)
            "parts": [
                (lo, hi, self._part(cross_k, cross_v, bias, rows[lo:hi]))
                for lo, hi in zip(bounds, bounds[1:])
            ],
        }

    def _part(self, cross_k, cross_v, bias, rows) -> dict:
        B = len(rows)
        shape = (self.num_layers, B, self.heads, self.head_dim, self.seq_len)
        used, local = np.unique(rows, return_inverse=True)  # this part's captions
        bias = np.ascontiguousarray(bias[used])
        unmasked = bias > NEG_INF / 2
        last = bias.shape[1] - np.argmax(unmasked[:, ::-1], axis=1)
        return {
            "keys": np.zeros(shape, np.float32),
            "values": np.zeros(shape, np.float32),
            "cross_k": np.ascontiguousarray(cross_k[:, used]),
            "cross_v": np.ascontiguousarray(cross_v[:, used]),
            "bias": bias,
            "cross_rows": local.astype(np.intp).reshape(-1),
            "cross_lengths": np.where(unmasked.any(axis=1), last, bias.shape[1]).astype(np.intp),
        }

    def step(
        self, state: dict, tokens: np.ndarray, t: int, token_range=None, hidden: bool = False
    ) -> np.ndarray:
        """Logits (B, V) for the tokens (B,) at position t; writes their keys/values.

        token_range (low, high): only tokens low..high-1's logits, (B, high - low), exactly
        those columns of the whole (the head multiplies only their weight rows). hidden:
        the final normalised states (B, dim) instead (what a digits head reads)."""
        if not 0 <= t < self.seq_len:
            raise ValueError(f"position {t} outside 0..{self.seq_len - 1}")
        if hidden:
            head, low, high = self._identity, 0, self.dim
        else:
            head_w, head_b = self.head
            first, last = self.rest_low, self.rest_low + len(head_b)
            low, high = (first, last) if token_range is None else token_range
            if not first <= low < high <= last:
                raise ValueError(f"token range {low}..{high} outside {first}..{last}")
            head = (head_w[low - first : high - first], head_b[low - first : high - first])
        x = self.token_embedding[np.asarray(tokens)] + self.pos_embedding[t]
        if state["pooled"] is not None:
            x += state["pooled"]
        logits = np.empty((len(x), high - low), np.float32)
        *parts, last = state["parts"]
        pending = [
            _pool().submit(self._step_part, part, x[lo:hi], t, head, logits[lo:hi])
            for lo, hi, part in parts
        ]
        lo, hi, part = last
        self._step_part(part, x[lo:hi], t, head, logits[lo:hi])
        for f in pending:
            f.result()
        return logits

    def _step_part(self, part: dict, x: np.ndarray, t: int, head, logits: np.ndarray) -> None:
        kernels().step(
            x, t, np.float32(self.eps), part["keys"], part["values"], part["cross_k"],
            part["cross_v"], part["bias"], part["cross_rows"], part["cross_lengths"], self.norms,
            self.final_norm, *self._layer_weights, *head,
            logits,
        )  # fmt: skip


# CpuDecoder copies of live models: id -> (weak reference, the parameter arrays it copied,
# decoder). An entry is reused only while the model is alive and holds the same arrays.
_DECODERS: dict[int, tuple[weakref.ref, list, CpuDecoder]] = {}


def cpu_decoder(model: ImageTransformer) -> CpuDecoder:
    """The model's `CpuDecoder`, built once and rebuilt when its weights are replaced."""
    from mlx.utils import tree_flatten

    leaves = [v for _, v in tree_flatten(model.parameters())]
    key = id(model)
    entry = _DECODERS.get(key)
    if entry is not None and entry[0]() is model and len(entry[1]) == len(leaves):
        if all(a is b for a, b in zip(entry[1], leaves)):
            return entry[2]
    decoder = CpuDecoder(model)
    if entry is None:
        weakref.finalize(model, _DECODERS.pop, key, None)
    _DECODERS[key] = (weakref.ref(model), leaves, decoder)
    return decoder


_PICKERS: dict[tuple, Callable] = {}


def _pick_fn(temperature, top_k, top_p, cfg_scale, noise) -> Callable:
    """The compiled MLX pick (it holds no model, so settings are the key)."""
    key = (temperature, top_k, top_p, cfg_scale, noise)
    if key not in _PICKERS:
        if len(_PICKERS) >= 64:
            _PICKERS.pop(next(iter(_PICKERS)))
        sampler = make_sampler(temperature, top_k, top_p, noise)
        _PICKERS[key] = mx.compile(partial(pick, sampler, cfg_scale, cfg_scale != 1.0))
    return _PICKERS[key]


def _plain_pick(draws, vocab: int, temperature, top_k, top_p, cfg_scale, noise):
    """`pick` without MLX, `pick(logits, t, low) -> tokens`, for settings without top-k/top-p
    filters (the defaults), else None; logits are those of tokens low.. (a position's token
    range, outside which every logit carries `MASKED` and no draw lands). Saves a round trip
    through MLX every token. `draws` is the images' GumbelNoise or UniformNoise, as `noise`
    says; uniform draws are compiled (`cpu_kernels.pick_uniform`), the others NumPy."""
    if (0 < top_k < vocab) or top_p < 1.0:
        return None
    guide = cfg_scale != 1.0
    scale = np.float32(cfg_scale)
    current: list = [None, None]  # the chunk of Gumbel noise in use, and it as NumPy

    def gumbel_at(t: int) -> np.ndarray:
        values, i = draws.chunk_of(t)
        if current[0] is not values:
            current[:] = [values, np.array(values, dtype=np.float32)]
        return current[1][:, i]

    # (S, B): each position's values contiguous
    uniform = np.array(draws.values, dtype=np.float32).T.copy() if noise == "uniform" else None

    def plain_pick(logits: np.ndarray, t: int, low: int) -> np.ndarray:
        if uniform is not None and temperature > 0:
            tokens = np.empty(uniform.shape[1], np.int32)
            kernels().pick_uniform(
                logits, guide, scale, np.float32(temperature), uniform[t], tokens
            )
            return tokens + low
        if guide:  # rows [conditional; unconditional], as `guided`
            half = len(logits) // 2
            cond, uncond = logits[:half], logits[half:]
            logits = uncond + scale * (cond - uncond)
        if temperature <= 0:
            return np.argmax(logits, axis=-1).astype(np.int32) + low
        logits = logits / np.float32(temperature)
        gumbel = gumbel_at(t)[:, low : low + logits.shape[1]]
        return np.argmax(logits + gumbel, axis=-1).astype(np.int32) + low

    return plain_pick


def cpu_codes(
    model: ImageTransformer,
    ctx: Context,
    rows: np.ndarray,
    seeds: list[int],
    settings: dict,
    progress_every: int,
) -> Iterator[tuple[int, np.ndarray | None]]:
    """The cpu engine's loop: yields (codes done, None), then (total, codes (B, total)
    int32). Row r reads caption rows[r] of ctx."""
    decoder = cpu_decoder(model)
    state = decoder.start(ctx, rows)
    if model.digits:
        yield from _digit_codes(model, decoder, state, seeds, settings, progress_every)
        return
    guide = settings["cfg_scale"] != 1.0
    N, S, V = len(seeds), model.seq_len, model.codebook_size
    noise = make_noise(settings["noise"], seeds, S, V)
    # each position's token range: the head multiplies only its rows, the pick reads them
    ranges = model.token_ranges().tolist()
    choose = _plain_pick(noise, V, **settings)
    if choose is None:  # filters: the compiled MLX pick, over the whole vocabulary
        mlx_pick = _pick_fn(**settings)
        ranges = [(0, V)] * S

        def choose(logits, t, low):
            bias = model.token_bias_at(t)
            if bias is not None:  # as `ImageTransformer.decode` adds it
                logits += bias
            return np.array(mlx_pick(mx.array(logits), noise.at(t)), dtype=np.int32)

    codes = np.empty((N, S), np.int32)
    tokens = np.full(2 * N if guide else N, model.bos_id, np.int32)
    for t in range(S):
        low, high = ranges[t]
        logits = decoder.step(state, tokens, t, (low, high))
        nxt = choose(logits, t, low)
        codes[:, t] = nxt
        tokens = np.concatenate([nxt, nxt]) if guide else nxt
        if (t + 1) % progress_every == 0 and t + 1 < S:
            yield t + 1, None
    yield S, codes


def _digit_pick(u: np.ndarray, temperature, top_k, top_p, cfg_scale, noise) -> Callable:
    """`pick(logits, t, k) -> (B,) int32`: position t's digit k (or its palette token, k 0)
    from its logits (B or 2B, n) and the images' uniform values u (S, K, B), as the mlx
    engine's `pick` draws it: compiled (`cpu_kernels.pick_uniform`) without filters, the
    compiled MLX pick with them."""
    guide = cfg_scale != 1.0
    if top_k > 0 or top_p < 1.0:
        mlx_pick = _pick_fn(temperature, top_k, top_p, cfg_scale, noise)
        return lambda logits, t, k: np.array(
            mlx_pick(mx.array(logits), mx.array(u[t, k])), dtype=np.int32
        )
    scale, temp = np.float32(cfg_scale), np.float32(temperature)

    def plain(logits: np.ndarray, t: int, k: int) -> np.ndarray:
        if temperature <= 0:
            if guide:
                cond, uncond = np.split(logits, 2)
                logits = uncond + scale * (cond - uncond)
            return np.argmax(logits, axis=-1).astype(np.int32)
        out = np.empty(u.shape[2], np.int32)
        kernels().pick_uniform(np.ascontiguousarray(logits), guide, scale, temp, u[t, k], out)
        return out

    return plain


def _digit_codes(model, decoder, state, seeds, settings, progress_every):
    """`cpu_codes` for a digits head: palette tokens from their logits, grid codes digit by
    digit from the final states (`NumpyDigitHead.sample`)."""
    guide = settings["cfg_scale"] != 1.0
    N, S, V = len(seeds), model.seq_len, model.codebook_size
    head = decoder.digit_head
    noise = make_noise(settings["noise"], seeds, S, V, len(head.levels))
    u = np.array(noise.values, dtype=np.float32).transpose(1, 2, 0).copy()  # (S, K, B)
    pick_at = _digit_pick(u, **settings)
    # the defaults (no filters, temperature > 0): each code's digits in one compiled call
    compiled = settings["temperature"] > 0 and settings["top_k"] <= 0 and settings["top_p"] >= 1
    packed = decoder.digit_arrays() if compiled else None
    scale, temperature = np.float32(settings["cfg_scale"]), np.float32(settings["temperature"])
    ranges = model.token_ranges().tolist()
    codes = np.empty((N, S), np.int32)
    tokens = np.full(2 * N if guide else N, model.bos_id, np.int32)
    for t in range(S):
        if t >= model.grid_start:
            h = decoder.step(state, tokens, t, hidden=True)
            if packed is not None:
                nxt = np.empty(N, np.int32)
                digit_kernels().sample_digits(h, *packed, guide, scale, temperature, u[t], nxt)
            else:
                nxt = head.sample(h, partial(_at_position, pick_at, t), guide)
        else:
            low, high = ranges[t]
            nxt = pick_at(decoder.step(state, tokens, t, (low, high)), t, 0) + low
        codes[:, t] = nxt
        tokens = np.concatenate([nxt, nxt]) if guide else nxt
        if (t + 1) % progress_every == 0 and t + 1 < S:
            yield t + 1, None
    yield S, codes


def _at_position(pick_at, t: int, k: int, logits: np.ndarray) -> np.ndarray:
    return pick_at(logits, t, k)
