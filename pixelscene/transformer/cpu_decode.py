"""The transformer's decoding step on the CPU, outside MLX, for sampling.

A decoding step multiplies one or two rows per image (conditional and unconditional) by
every weight matrix. MLX's CPU backend sends each of those products through sgemm, which
spends most of its time packing the weight matrix (about 25 us for a 256x256 float32
matrix on one core), and a step at batch 1 is then bound by those calls, not by reading
the weights. `NumpyDecoder` runs the same step on weights copied out of the model once:

- where Numba is installed, as one compiled call (`jit_decode.step`): each weight row read
  once for all rows, float16 weights converted while being read (see there); a batch of
  `PARALLEL_MIN_ROWS` rows or more is split over the CPUs, one part per thread;
- without Numba (or with `jit=False`), in NumPy: one gemv per row for few rows, one gemm
  for many;
- the self-attention keys/values live in preallocated (B, H, S, d) buffers and a step
  attends over exactly the positions written so far;
- the caption's cross-attention keys/values and mask come from `ImageTransformer.context`
  (MLX), computed once per prompt batch.

Logits agree with `ImageTransformer.decode` to float32 rounding (tests check 1e-4).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial

import mlx.core as mx
import numpy as np

from pixelscene.errors import PixelsceneError
from pixelscene.transformer.model import Context, ImageTransformer
from pixelscene.transformer.text_encoder import NEG_INF

log = logging.getLogger(__name__)


@cache
def compiled_steps():
    """The `jit_decode` module, or None where Numba cannot be imported (then every step runs
    on NumPy). Imported on first use: Numba and LLVM add ~120 MB to a process, which a
    worker sampling with MLX on a GPU does not need."""
    try:
        from pixelscene.transformer import jit_decode
    except ImportError:  # pragma: no cover - Numba is a dependency; a broken install falls back
        return None
    return jit_decode


# NumPy path: up to this many rows a product is one gemv per row. Each gemv streams the
# matrix, yet two still beat one small-M sgemm, which packs it first (256x256: 2 x 5.3 us
# vs 24 us).
GEMV_MAX_ROWS = 4
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


# A block's linear layers in `jit_decode.step`'s argument order.
LINEARS = (
    ("qkv", lambda b: b.self_attn.qkv),
    ("proj", lambda b: b.self_attn.proj),
    ("cross_q", lambda b: b.cross_attn.q),
    ("cross_proj", lambda b: b.cross_attn.proj),
    ("fc1", lambda b: b.mlp.fc1),
    ("fc2", lambda b: b.mlp.fc2),
)


def warm_up() -> None:
    """Have the compiled step ready (compiled, or loaded from Numba's on-disk cache): about
    10 s the first time on a machine, under a second after. No-op without Numba."""
    if compiled_steps() is None:
        return
    t0 = time.perf_counter()
    compiled_steps().warm_up()
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


def _linear(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x @ w.T + b on NumPy: a gemv per row for few rows, else one gemm."""
    if x.shape[0] > GEMV_MAX_ROWS:
        out = x @ w.T
    else:
        out = np.empty((x.shape[0], w.shape[0]), np.float32)
        for i in range(x.shape[0]):
            np.dot(w, x[i], out=out[i])
    out += b
    return out


def _layer_norm(x: np.ndarray, affine: np.ndarray, eps: float) -> np.ndarray:
    n = x.shape[-1]
    x = x - np.add.reduce(x, axis=-1, keepdims=True) / n
    var = np.einsum("ij,ij->i", x, x)[:, None]
    x *= 1.0 / np.sqrt(var / n + eps)
    x *= affine[0]
    x += affine[1]
    return x


def _softmax_rows(s: np.ndarray) -> np.ndarray:
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


def _attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias=None) -> np.ndarray:
    """One query per (row, head): q (B, H, d) pre-scaled, k/v (B, H, n, d) -> (B, H, d)."""
    s = np.matmul(k, q[..., None])[..., 0]  # (B, H, n)
    if bias is not None:
        s += bias
    return np.matmul(_softmax_rows(s)[:, :, None, :], v)[:, :, 0]


class NumpyDecoder:
    """A frozen copy of an `ImageTransformer`'s decoder that steps on the CPU.

    Usage: `state = dec.start(ctx)` for a batch's `Context` (rows in the same order as the
    tokens), then `logits = dec.step(state, tokens, t)` for t = 0, 1, ... with the token
    (B,) int at position t (BOS first). Weights are copied at construction: rebuild after
    the model's weights change. `jit=False` keeps every step on NumPy (the default steps
    compiled where Numba is installed). The compiled step keeps weights as float16 bits
    (int16) where float16 holds them exactly; `half=False` keeps them float32.
    """

    def __init__(self, model: ImageTransformer, jit: bool | None = None, half: bool | None = None):
        available = compiled_steps() is not None
        if jit and not available:
            raise RuntimeError("the compiled decoding step needs Numba (pip install numba)")
        self.jit = available if jit is None else jit
        self.dim = model.cfg.embed_dim
        self.heads = model.num_heads
        self.head_dim = self.dim // self.heads
        self.seq_len = model.seq_len
        self.eps = float(model.norm.eps)
        self.scale = np.float32(1.0 / np.sqrt(self.head_dim))
        self.token_embedding = _np(model.token_embedding.weight)
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
        # The compiled step reads float16 bits where that loses nothing (a model loaded from
        # its float16 file): one copy of the weights, half the bytes per step.
        self.half = False
        if self.jit and half is not False:
            halves = [_as_half_bits(w) for w, _ in [*self.layers.values(), self.head]]
            if all(h is not None for h in halves):
                *layer_halves, head_half = halves
                self.layers = {
                    name: (h, b) for h, (name, (_, b)) in zip(layer_halves, self.layers.items())
                }
                self.head = (head_half, self.head[1])
                self.half = True
        # `jit_decode.step`'s weight arguments, in order
        self._step_weights = [a for pair in [*self.layers.values(), self.head] for a in pair]

    @property
    def num_layers(self) -> int:
        return len(self.norms)

    def start(self, ctx: Context, rows=None) -> dict:
        """Per-batch state: empty self-attention caches and the captions' keys/values.

        `rows` (B,) gives each row's caption in ctx, so that a caption shared by many rows
        (n images of a prompt; every unconditional row) is computed and stored once; None:
        row i reads caption i. The compiled step reads each caption once for all the rows
        of a part that share it, up to its last unmasked position. For the compiled step, a
        batch of `PARALLEL_MIN_ROWS` rows or more is split into one part per CPU; each part
        has its own contiguous arrays and steps on its own thread."""
        cross_k = np.stack([_np(k) for k, _ in ctx.kv])  # (layers, C, H, L, d)
        cross_v = np.stack([_np(v) for _, v in ctx.kv])
        bias = _np(ctx.bias)[:, 0, 0, :]  # (C, L)
        rows = np.arange(len(bias)) if rows is None else np.asarray(rows, np.intp)
        if rows.ndim != 1 or len(rows) == 0 or rows.min() < 0 or rows.max() >= len(bias):
            raise ValueError(f"rows must index the context's {len(bias)} captions")
        B = len(rows)
        parts = 1
        if self.jit and B >= PARALLEL_MIN_ROWS:
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
        shape = (self.num_layers, B, self.heads, self.seq_len, self.head_dim)
        part = {"keys": np.zeros(shape, np.float32), "values": np.zeros(shape, np.float32)}
        if not self.jit:  # one caption copy per row
            part.update(cross_k=cross_k[:, rows], cross_v=cross_v[:, rows], bias=bias[rows])
            return part
        used, local = np.unique(rows, return_inverse=True)  # this part's captions
        bias = np.ascontiguousarray(bias[used])
        unmasked = bias > NEG_INF / 2
        last = bias.shape[1] - np.argmax(unmasked[:, ::-1], axis=1)
        part.update(
            cross_k=np.ascontiguousarray(cross_k[:, used]),
            cross_v=np.ascontiguousarray(cross_v[:, used]),
            bias=bias,
            cross_rows=local.astype(np.intp).reshape(-1),
            cross_lengths=np.where(unmasked.any(axis=1), last, bias.shape[1]).astype(np.intp),
        )
        return part

    def step(self, state: dict, tokens: np.ndarray, t: int) -> np.ndarray:
        """Logits (B, V) for the tokens (B,) at position t; writes their keys/values."""
        if not 0 <= t < self.seq_len:
            raise ValueError(f"position {t} outside 0..{self.seq_len - 1}")
        x = self.token_embedding[np.asarray(tokens)] + self.pos_embedding[t]
        if state["pooled"] is not None:
            x += state["pooled"]
        if not self.jit:
            ((_, _, part),) = state["parts"]
            return self._numpy_step(part, x, t)
        logits = np.empty((len(x), self.head[0].shape[0]), np.float32)
        *parts, last = state["parts"]
        pending = [
            _pool().submit(self._jit_step, part, x[lo:hi], t, logits[lo:hi])
            for lo, hi, part in parts
        ]
        lo, hi, part = last
        self._jit_step(part, x[lo:hi], t, logits[lo:hi])
        for f in pending:
            f.result()
        return logits

    def _jit_step(self, part: dict, x: np.ndarray, t: int, logits: np.ndarray) -> None:
        compiled_steps().step(
            x, t, np.float32(self.eps), part["keys"], part["values"], part["cross_k"],
            part["cross_v"], part["bias"], part["cross_rows"], part["cross_lengths"], self.norms,
            self.final_norm, *self._step_weights,
            logits,
        )  # fmt: skip

    def _numpy_step(self, state: dict, x: np.ndarray, t: int) -> np.ndarray:
        B, H, d = len(x), self.heads, self.head_dim
        bias = state["bias"][:, None, :]
        for i in range(self.num_layers):
            linear = partial(self._layer_linear, i)
            norms = self.norms[i]
            qkv = linear("qkv", _layer_norm(x, norms[0], self.eps)).reshape(B, 3, H, d)
            keys, values = state["keys"][i], state["values"][i]
            keys[:, :, t] = qkv[:, 1]
            values[:, :, t] = qkv[:, 2]
            a = _attend(qkv[:, 0] * self.scale, keys[:, :, : t + 1], values[:, :, : t + 1])
            x += linear("proj", a.reshape(B, self.dim))
            q = linear("cross_q", _layer_norm(x, norms[1], self.eps)).reshape(B, H, d)
            a = _attend(q * self.scale, state["cross_k"][i], state["cross_v"][i], bias)
            x += linear("cross_proj", a.reshape(B, self.dim))
            h = linear("fc1", _layer_norm(x, norms[2], self.eps))
            np.maximum(h, 0.0, out=h)
            x += linear("fc2", h)
        return _linear(*self.head, _layer_norm(x, self.final_norm, self.eps))

    def _layer_linear(self, layer: int, name: str, inputs: np.ndarray) -> np.ndarray:
        w, b = self.layers[name]
        return _linear(w[layer], b[layer], inputs)
