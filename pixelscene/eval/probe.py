"""Attribute probe: a small CNN that reads scene attributes back from a 320x200 image.

It is trained on synthetic images and their ground-truth attributes (attributes.jsonl),
and measures whether generated images show what their prompt asked for. Images are
average-pooled 2x (200x320 -> 100x160) first: small objects (a 6-pixel-wide tower, a row of
cacti) survive that, and the pooled input trains in minutes on a CPU.

A probe on disk is a folder: `probe.safetensors` + `probe.json` (architecture, input pooling
and size, attribute vocabularies and the accuracy measured on held-out real images when it was
trained). Format 1 probes (4x pooling, one convolution) still load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.data.datasets import read_image, read_jsonl, to_float
from pixelscene.errors import DataError, ModelLoadError
from pixelscene.model_io import (
    PACKAGE_DIR,
    atomic_write_bytes,
    load_weights,
    round_to_float16,
    save_weights,
)

log = logging.getLogger(__name__)

BUNDLED_PROBE_DIR = PACKAGE_DIR / "models" / "probe"
PROBE_FORMAT = 2
POOL = 2
IMAGE_HW = (200, 320)
DEFAULT_CHANNELS = (48, 96, 128)


def pool_images(images: np.ndarray | mx.array, factor: int = POOL) -> np.ndarray:
    """Average-pool float (B, H, W, C) images by `factor`: (B, 200, 320, 3) -> (B, 100, 160, 3)."""
    x = np.asarray(images, dtype=np.float32)
    if factor == 1:
        return x
    B, H, W, C = x.shape
    return x.reshape(B, H // factor, factor, W // factor, factor, C).mean(axis=(2, 4))


def patchify(x: mx.array, k: int) -> mx.array:
    """(B, H, W, C) -> (B, H/k, W/k, k*k*C): each k x k patch becomes one position."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // k, k, W // k, k, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H // k, W // k, k * k * C)


def pad_to_multiple(x: mx.array, k: int) -> mx.array:
    """Zero-pad (B, H, W, C) at the bottom and right so H and W divide by k."""
    B, H, W, C = x.shape
    ph, pw = -H % k, -W % k
    return mx.pad(x, [(0, 0), (0, ph), (0, pw), (0, 0)]) if ph or pw else x


def conv3x3_columns(x: mx.array) -> mx.array:
    """(B, H, W, C) -> (B, H, W, 9C): each position's 3x3 neighbourhood (zero padded)."""
    B, H, W, C = x.shape
    p = mx.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    return mx.concatenate([p[:, i : i + H, j : j + W] for i in range(3) for j in range(3)], axis=-1)


class AttributeProbe(nn.Module):
    """Three stages, each a strided patch embedding (4x4, then 2x2, 2x2) and a 3x3 convolution,
    then the max over positions (a landmark or a tree anywhere), the mean (sky colour, weather)
    and per-row means of the last stage (what is above, what below), a dense layer and one
    softmax head per attribute. On a 100x160 input the stages are 25x40, 13x20 and 7x10.

    Convolutions are written as patch/neighbourhood gathers + Linear, the same functions as
    nn.Conv2d, but plain matrix products, which train several times faster than MLX's CPU
    convolutions.
    """

    def __init__(
        self,
        attributes: dict[str, tuple[str, ...] | list[str]] | None = None,
        channels: tuple[int, ...] | list[int] = DEFAULT_CHANNELS,
        hidden: int = 192,
        dropout: float = 0.2,
        input_size: tuple[int, int] | list[int] = (100, 160),
        pool: int = POOL,
        stem: int = 4,
    ):
        super().__init__()
        attributes = attributes or ATTRIBUTES
        if len(channels) != 3:
            raise ValueError(f"channels {channels}: expected three widths")
        h, w = input_size
        if h % stem or w % stem:
            raise ValueError(f"input size {input_size}: must divide by the stem patch {stem}")
        self.attribute_values = {k: list(v) for k, v in attributes.items()}
        self.pool = pool
        self.config = {
            "arch": "stages3",
            "channels": list(channels),
            "hidden": hidden,
            "dropout": dropout,
            "input_size": list(input_size),
            "pool": pool,
            "stem": stem,
        }
        self.stem = stem
        c1, c2, c3 = channels
        # Each patch embedding is layer-normalised over channels: that takes out the local
        # brightness and colour cast (night, fog, sunset), so a sprite's shape stands out.
        self.embed1 = nn.Linear(stem * stem * 3, c1)
        self.norm1 = nn.LayerNorm(c1)
        self.norm2 = nn.LayerNorm(c2)
        self.norm3 = nn.LayerNorm(c3)
        self.conv1 = nn.Linear(9 * c1, c1)
        self.embed2 = nn.Linear(4 * c1, c2)
        self.conv2 = nn.Linear(9 * c2, c2)
        self.embed3 = nn.Linear(4 * c2, c3)
        self.conv3 = nn.Linear(9 * c3, c3)
        rows = ((h // stem + 1) // 2 + 1) // 2  # rows of the last stage
        self.fc = nn.Linear(rows * c3 + 2 * c3 + c2, hidden)
        self.drop = nn.Dropout(dropout)
        self.heads = {k: nn.Linear(hidden, len(v)) for k, v in self.attribute_values.items()}
        # He initialisation: with MLX's default (uniform, variance 1/(3 fan_in)) the signal
        # shrinks ~2.5x per ReLU layer and this seven-layer stack barely trains.
        for layer in (self.embed1, self.conv1, self.embed2, self.conv2, self.embed3, self.conv3):
            fan_in = layer.weight.shape[1]
            layer.weight = mx.random.normal(layer.weight.shape) * (2.0 / fan_in) ** 0.5
            layer.bias = mx.zeros(layer.bias.shape)

    def __call__(self, x: mx.array) -> dict[str, mx.array]:
        B = x.shape[0]  # x: (B, 100, 160, 3) pooled images in [-1, 1]
        x = nn.relu(self.norm1(self.embed1(patchify(x, self.stem))))  # (B, 25, 40, c1)
        x = nn.relu(self.conv1(conv3x3_columns(x)))
        x = nn.relu(self.norm2(self.embed2(patchify(pad_to_multiple(x, 2), 2))))  # (B, 13, 20, c2)
        x = nn.relu(self.conv2(conv3x3_columns(x)))
        mid_max = x.reshape(B, -1, x.shape[-1]).max(axis=1)
        x = nn.relu(self.norm3(self.embed3(patchify(pad_to_multiple(x, 2), 2))))  # (B, 7, 10, c3)
        x = nn.relu(self.conv3(conv3x3_columns(x)))
        rows = x.mean(axis=2).reshape(B, -1)
        cells = x.reshape(B, -1, x.shape[-1])
        feats = mx.concatenate([rows, cells.max(axis=1), cells.mean(axis=1), mid_max], axis=1)
        x = self.drop(nn.relu(self.fc(feats)))
        return {k: head(x) for k, head in self.heads.items()}


class AttributeProbeV1(nn.Module):
    """The format 1 probe (4x pooled 50x80 input, one 3x3 convolution); loads old probe folders."""

    def __init__(
        self,
        attributes: dict[str, tuple[str, ...] | list[str]] | None = None,
        channels: tuple[int, ...] | list[int] = (48, 64, 128),
        hidden: int = 192,
        dropout: float = 0.2,
        input_size: tuple[int, int] | list[int] = (50, 80),
    ):
        super().__init__()
        attributes = attributes or ATTRIBUTES
        c1, c2, c3 = channels
        h, _ = input_size
        self.attribute_values = {k: list(v) for k, v in attributes.items()}
        self.pool = 4
        self.config = {
            "channels": list(channels),
            "hidden": hidden,
            "dropout": dropout,
            "input_size": list(input_size),
            "pool": 4,
        }
        self.patch1 = nn.Linear(4 * 3, c1)
        self.conv = nn.Linear(9 * c1, c2)
        self.patch2 = nn.Linear(4 * c2, c3)
        self.fc = nn.Linear((h // 2 + 1) // 2 * c3 + 2 * c3, hidden)
        self.drop = nn.Dropout(dropout)
        self.heads = {k: nn.Linear(hidden, len(v)) for k, v in self.attribute_values.items()}

    def __call__(self, x: mx.array) -> dict[str, mx.array]:
        B = x.shape[0]
        x = nn.gelu(self.patch1(patchify(x, 2)))
        x = nn.gelu(self.conv(conv3x3_columns(x)))
        x = nn.gelu(self.patch2(patchify(pad_to_multiple(x, 2), 2)))
        rows = x.mean(axis=2).reshape(B, -1)
        cells = x.reshape(B, -1, x.shape[-1])
        feats = mx.concatenate([rows, cells.max(axis=1), cells.mean(axis=1)], axis=1)
        x = self.drop(nn.gelu(self.fc(feats)))
        return {k: head(x) for k, head in self.heads.items()}


def resolve_probe_dir(probe_dir: str | os.PathLike | None) -> Path:
    path = BUNDLED_PROBE_DIR if probe_dir is None else Path(probe_dir)
    if not (path / "probe.json").is_file():
        raise ModelLoadError(
            f"{path} is not a probe folder (no probe.json); train one with "
            "`pixelscene train probe --data DIR --eval-data DIR --out DIR`"
        )
    return path


def save_probe(
    out_dir: str | os.PathLike,
    probe: AttributeProbe,
    info: dict[str, Any],
    dtype: mx.Dtype | None = mx.float16,
) -> None:
    """Write probe.safetensors (float16 by default: half the size, same predictions) + probe.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(out_dir / "probe.safetensors", probe, dtype=dtype)
    doc = {"format": PROBE_FORMAT, "attributes": probe.attribute_values, **probe.config, **info}
    atomic_write_bytes(out_dir / "probe.json", json.dumps(doc, indent=2).encode())


def load_probe(probe_dir: str | os.PathLike | None = None) -> tuple[AttributeProbe, dict[str, Any]]:
    """Load a probe folder (None = the bundled probe); returns (probe in eval mode, probe.json).

    `probe.pool` is the pooling factor its input needs (`predict_attributes` applies it).
    """
    path = resolve_probe_dir(probe_dir)
    try:
        info = json.loads((path / "probe.json").read_text())
        fmt = info.get("format")
        args = (info["attributes"], info["channels"], info["hidden"], info["dropout"])
        if fmt == 1:
            probe: nn.Module = AttributeProbeV1(*args, info["input_size"])
        elif fmt == PROBE_FORMAT:
            probe = AttributeProbe(*args, info["input_size"], info["pool"], info["stem"])
        else:
            raise ValueError(f"unknown format {fmt!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(
            f"{path / 'probe.json'}: not a valid probe description ({e})"
        ) from None
    load_weights(path / "probe.safetensors", probe)
    probe.eval()
    return probe, info


def predict_pooled(
    probe: AttributeProbe, pooled: np.ndarray, batch_size: int = 128
) -> dict[str, np.ndarray]:
    """Predicted value index per attribute for pooled images (N, 200/pool, 320/pool, 3)."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in probe.attribute_values}
    for start in range(0, len(pooled), batch_size):
        logits = probe(mx.array(pooled[start : start + batch_size], dtype=mx.float32))
        mx.eval(logits)
        for k, v in logits.items():
            out[k].append(np.array(mx.argmax(v, axis=-1)))
    return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in out.items()}


def predict_attributes(probe: AttributeProbe, pixels: np.ndarray) -> list[dict[str, str]]:
    """Attribute values the probe reads from uint8 (N, 200, 320, 3) images."""
    pred = predict_pooled(probe, pool_images(to_float(pixels), probe.pool))
    names = probe.attribute_values
    return [{k: names[k][int(pred[k][i])] for k in names} for i in range(len(pixels))]


def accuracy(
    probe: AttributeProbe, pooled: np.ndarray, labels: dict[str, np.ndarray]
) -> dict[str, float]:
    """Per-attribute accuracy plus their `mean` (images pooled by `probe.pool`)."""
    pred = predict_pooled(probe, pooled)
    acc = {k: float((pred[k] == labels[k]).mean()) for k in probe.attribute_values}
    acc["mean"] = float(np.mean(list(acc.values())))
    return acc


# ----------------------------------------------------------------------------- data


def load_attribute_data(
    data_dir: str | os.PathLike,
    limit: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    chunk: int = 64,
    pool: int = POOL,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pooled images (N, 200/pool, 320/pool, 3) float16 and label indices per attribute.

    `transform` maps float (B, 200, 320, 3) images before pooling (e.g. a VQGAN round trip).
    With `cache_dir` (and no transform) the decoded arrays are kept in an npz there, keyed by
    the folder, its attributes.jsonl (size, mtime), the limit and the pooling.
    Bad lines and unknown values raise DataError naming file and line.
    """
    data_dir = Path(data_dir)
    attr_file = data_dir / "attributes.jsonl"
    if not attr_file.is_file():
        raise DataError(
            f"{attr_file}: attributes file not found (make one with `pixelscene synth`)"
        )
    cache = None
    if cache_dir is not None and transform is None:
        st = attr_file.stat()
        key = f"{data_dir.resolve()}|{st.st_size}|{st.st_mtime_ns}|{limit}|{pool}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        cache = Path(cache_dir) / f"{data_dir.name}-{digest}-p{pool}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                return z["pooled"], {k: z[f"label_{k}"] for k in ATTRIBUTES}

    def fail(message: str) -> None:
        raise DataError(message)

    rows = read_jsonl(attr_file, ("image", *ATTRIBUTES), fail)[: limit or None]
    if not rows:
        raise DataError(f"{attr_file}: no images listed")
    labels = {k: np.zeros(len(rows), np.int64) for k in ATTRIBUTES}
    for i, row in enumerate(rows):
        for k, values in ATTRIBUTES.items():
            if row[k] not in values:
                raise DataError(f"{attr_file}:{row['_line']}: unknown {k} {row[k]!r}")
            labels[k][i] = values.index(row[k])
    H, W = IMAGE_HW
    pooled = np.zeros((len(rows), H // pool, W // pool, 3), np.float16)
    for start in range(0, len(rows), chunk):
        batch = np.stack(
            [
                to_float(read_image(data_dir / "images" / r["image"]))
                for r in rows[start : start + chunk]
            ]
        )
        if transform is not None:
            batch = transform(batch)
        pooled[start : start + len(batch)] = pool_images(batch, pool)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.tmp.npz")
        np.savez(tmp, pooled=pooled, **{f"label_{k}": v for k, v in labels.items()})
        os.replace(tmp, cache)
    return pooled, labels


def vqgan_round_trip(model_dir: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    """A transform that passes images through a model's VQGAN (encode, decode)."""
    from pixelscene.vqgan import load_vqgan

    vqgan = load_vqgan(model_dir)

    def transform(batch: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(batch), 16):
            codes = vqgan.encode(mx.array(batch[start : start + 16]))
            img = vqgan.decode(codes)
            mx.eval(img)
            out.append(np.array(img))
        return np.concatenate(out)

    return transform


# ----------------------------------------------------------------------------- training


def augment(x: np.ndarray, rng: np.random.Generator, degrade: float = 0.5) -> np.ndarray:
    """Training augmentation for pooled float32 images (B, H, W, 3).

    Random horizontal flips (attributes do not depend on left/right), colour jitter, mild
    noise, and for a `degrade` fraction of images a blur like a VQGAN decoder's: average-pool
    by 2 or 4 and upsample back (nearest or bilinear), since generated images are decoded
    from a 13x20 code grid and look softer than the crisp renders.
    """
    B, H, W, C = x.shape
    flip = rng.random(B) < 0.5
    x[flip] = x[flip, :, ::-1]
    kind = np.where(rng.random(B) < degrade, rng.integers(0, 4, size=B), -1)
    for code in range(4):
        idx = np.flatnonzero(kind == code)
        k = 2 if code < 2 or H % 4 or W % 4 else 4
        if len(idx) == 0 or H % k or W % k:
            continue
        small = x[idx].reshape(len(idx), H // k, k, W // k, k, C).mean(axis=(2, 4))
        if code % 2:
            x[idx] = _bilinear_up(small, k)
        else:
            x[idx] = small.repeat(k, axis=1).repeat(k, axis=2)
    scale = rng.uniform(0.85, 1.15, size=(B, 1, 1, 1)).astype(np.float32)
    shift = rng.uniform(-0.08, 0.08, size=(B, 1, 1, C)).astype(np.float32)
    x = x * scale + shift
    x += rng.normal(0.0, 0.03, size=x.shape).astype(np.float32)
    return np.clip(x, -1.0, 1.0, out=x)


def _bilinear_up(small: np.ndarray, k: int) -> np.ndarray:
    """Upsample (B, h, w, C) by k with bilinear interpolation (pixel centres, edges clamped)."""
    _, h, w, _ = small.shape

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n * k) + 0.5) / k - 0.5, 0, n - 1)
        lo = np.floor(pos).astype(np.int64)
        return lo, np.minimum(lo + 1, n - 1), (pos - lo).astype(np.float32)

    r0, r1, fr = axis(h)
    c0, c1, fc = axis(w)
    fr, fc = fr[None, :, None, None], fc[None, None, :, None]
    rows = small[:, r0] * (1 - fr) + small[:, r1] * fr
    return rows[:, :, c0] * (1 - fc) + rows[:, :, c1] * fc


def train_probe(
    train: tuple[np.ndarray, dict[str, np.ndarray]],
    *,
    epochs: int = 8,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    channels: list[int] | None = None,
    degrade: float = 0.5,
    progress: Callable[[int, int, float], None] | None = None,
) -> AttributeProbe:
    """Train a probe on pooled images + labels (from `load_attribute_data`); returns it in eval mode."""
    pooled, labels = train
    n, H, W, _ = pooled.shape
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    probe = AttributeProbe(
        channels=channels or DEFAULT_CHANNELS, input_size=(H, W), pool=IMAGE_HW[0] // H
    )
    mx.eval(probe.parameters())
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    steps = epochs * per_epoch
    warmup = min(100, steps // 10)
    schedule = optim.join_schedules(
        [
            optim.linear_schedule(learning_rate * 0.1, learning_rate, max(warmup, 1)),
            optim.cosine_decay(learning_rate, max(steps - warmup, 1), learning_rate * 0.02),
        ],
        [warmup],
    )
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=1e-4)
    names = list(probe.attribute_values)

    def loss_fn(model, x, ys):
        logits = model(x)
        return sum(
            nn.losses.cross_entropy(logits[k], y, reduction="mean")
            for k, y in zip(names, ys, strict=True)
        )

    state = [probe.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, ys):
        loss, grads = nn.value_and_grad(probe, loss_fn)(probe, x, ys)
        optimizer.update(probe, grads)
        return loss

    probe.train()
    done = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for b in range(per_epoch):
            idx = np.sort(order[b * batch_size : (b + 1) * batch_size])
            x = augment(pooled[idx].astype(np.float32), rng, degrade)
            loss = step(mx.array(x), [mx.array(labels[k][idx]) for k in names])
            mx.eval(state)
            done += 1
            if progress is not None:
                progress(done, steps, float(loss))
    probe.eval()
    return probe


def train_and_save(
    data_dir: str | os.PathLike,
    eval_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    epochs: int = 8,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    limit: int | None = None,
    eval_limit: int | None = None,
    vqgan_dir: str | os.PathLike | None = None,
    round_trip_limit: int = 200,
    train_on_round_trip: bool = False,
    channels: list[int] | None = None,
    pool: int = POOL,
    degrade: float = 0.5,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Load data, train, measure on held-out real images (and their VQGAN round trip), save.

    With `vqgan_dir`, the first `round_trip_limit` held-out images are also passed through that
    VQGAN and measured (how the probe does on images that look generated); with
    `train_on_round_trip` the training images' reconstructions are added to the training set
    (slow: a VQGAN round trip per image). Returns the metrics written into probe.json.
    """
    t0 = time.perf_counter()
    train = load_attribute_data(data_dir, limit, pool=pool, cache_dir=cache_dir)
    held_out = load_attribute_data(eval_dir, eval_limit, pool=pool, cache_dir=cache_dir)
    round_trip = vqgan_round_trip(vqgan_dir) if vqgan_dir is not None else None
    if round_trip is not None and train_on_round_trip:
        recon = load_attribute_data(data_dir, limit, transform=round_trip, pool=pool)
        train = (
            np.concatenate([train[0], recon[0]]),
            {k: np.concatenate([train[1][k], recon[1][k]]) for k in train[1]},
        )
    load_s = time.perf_counter() - t0
    probe = train_probe(
        train,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        channels=channels,
        degrade=degrade,
        progress=progress,
    )
    train_s = time.perf_counter() - t0 - load_s
    # Measure the probe as shipped: weights rounded to float16 as save_probe writes them.
    round_to_float16(probe)
    info: dict[str, Any] = {
        "eval_accuracy": accuracy(probe, *held_out),
        "train_accuracy": accuracy(
            probe, train[0][:1000], {k: v[:1000] for k, v in train[1].items()}
        ),
        "train_images": int(len(train[0])),
        "eval_images": int(len(held_out[0])),
        "train_data": str(data_dir),
        "eval_data": str(eval_dir),
        "epochs": epochs,
        "seed": seed,
        "degrade": degrade,
        "load_seconds": round(load_s, 1),
        "train_seconds": round(train_s, 1),
    }
    if round_trip is not None:
        n = min(round_trip_limit, len(held_out[0]))
        recon_eval = load_attribute_data(eval_dir, n, transform=round_trip, pool=pool)
        info["eval_accuracy_vqgan_round_trip"] = accuracy(probe, *recon_eval)
        info["eval_images_vqgan_round_trip"] = n
        info["vqgan_model"] = str(vqgan_dir)
    save_probe(out_dir, probe, info)
    return info
