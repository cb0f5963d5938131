"""Attribute probe: a small CNN that reads scene attributes back from a 320x200 image.

It is trained on synthetic images and their ground-truth attributes (attributes.jsonl),
and measures whether generated images show what their prompt asked for. Images are
average-pooled 4x (200x320 -> 50x80) first: attributes are large-scale (sky colour,
terrain shape, a landmark's silhouette), and the pooled input trains in minutes on a CPU.

A probe on disk is a folder: `probe.safetensors` + `probe.json` (architecture, attribute
vocabularies and the accuracy measured on held-out real images when it was trained).
"""

from __future__ import annotations

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
from pixelscene.model_io import PACKAGE_DIR, atomic_write_bytes, load_weights, save_weights

log = logging.getLogger(__name__)

BUNDLED_PROBE_DIR = PACKAGE_DIR / "models" / "probe"
PROBE_FORMAT = 1
POOL = 4


def pool_images(images: np.ndarray | mx.array, factor: int = POOL) -> np.ndarray:
    """Average-pool float (B, H, W, C) images by `factor`: (B, 200, 320, 3) -> (B, 50, 80, 3)."""
    x = np.asarray(images, dtype=np.float32)
    B, H, W, C = x.shape
    return x.reshape(B, H // factor, factor, W // factor, factor, C).mean(axis=(2, 4))


def patchify(x: mx.array, k: int) -> mx.array:
    """(B, H, W, C) -> (B, H/k, W/k, k*k*C): each k x k patch becomes one position."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // k, k, W // k, k, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H // k, W // k, k * k * C)


def conv3x3_columns(x: mx.array) -> mx.array:
    """(B, H, W, C) -> (B, H, W, 9C): each position's 3x3 neighbourhood (zero padded)."""
    B, H, W, C = x.shape
    p = mx.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    return mx.concatenate([p[:, i : i + H, j : j + W] for i in range(3) for j in range(3)], axis=-1)


class AttributeProbe(nn.Module):
    """2x2 patches -> 3x3 convolution -> 2x2 patches, then per-row means (where things are:
    sky above, ground below), the max over positions (small objects anywhere) and the mean,
    a dense layer and one softmax head per attribute.

    Convolutions are written as patch/neighbourhood gathers + Linear, the same functions as
    nn.Conv2d, but plain matrix products, which train several times faster than MLX's CPU
    convolutions.
    """

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
        h, w = input_size
        if h % 2 or w % 4:
            raise ValueError(f"input size {input_size}: height must be even, width divisible by 4")
        self.attribute_values = {k: list(v) for k, v in attributes.items()}
        self.config = {
            "channels": list(channels),
            "hidden": hidden,
            "dropout": dropout,
            "input_size": list(input_size),
        }
        self.patch1 = nn.Linear(4 * 3, c1)
        self.conv = nn.Linear(9 * c1, c2)
        self.patch2 = nn.Linear(4 * c2, c3)
        rows = (h // 2 + 1) // 2
        self.fc = nn.Linear(rows * c3 + 2 * c3, hidden)
        self.drop = nn.Dropout(dropout)
        self.heads = {k: nn.Linear(hidden, len(v)) for k, v in self.attribute_values.items()}

    def __call__(self, x: mx.array) -> dict[str, mx.array]:
        B = x.shape[0]  # x: (B, 50, 80, 3) pooled images in [-1, 1]
        x = nn.gelu(self.patch1(patchify(x, 2)))  # (B, 25, 40, c1)
        x = nn.gelu(self.conv(conv3x3_columns(x)))  # (B, 25, 40, c2)
        if x.shape[1] % 2:
            x = mx.pad(x, [(0, 0), (0, 1), (0, 0), (0, 0)])
        x = nn.gelu(self.patch2(patchify(x, 2)))  # (B, 13, 20, c3)
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


def save_probe(out_dir: str | os.PathLike, probe: AttributeProbe, info: dict[str, Any]) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(out_dir / "probe.safetensors", probe)
    doc = {
        "format": PROBE_FORMAT,
        "pool": POOL,
        "attributes": probe.attribute_values,
        **probe.config,
        **info,
    }
    atomic_write_bytes(out_dir / "probe.json", json.dumps(doc, indent=2).encode())


def load_probe(probe_dir: str | os.PathLike | None = None) -> tuple[AttributeProbe, dict[str, Any]]:
    """Load a probe folder (None = the bundled probe); returns (probe in eval mode, probe.json)."""
    path = resolve_probe_dir(probe_dir)
    try:
        info = json.loads((path / "probe.json").read_text())
        if info.get("format") != PROBE_FORMAT:
            raise ValueError(f"unknown format {info.get('format')!r}")
        probe = AttributeProbe(
            info["attributes"],
            info["channels"],
            info["hidden"],
            info["dropout"],
            info["input_size"],
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(
            f"{path / 'probe.json'}: not a valid probe description ({e})"
        ) from None
    load_weights(path / "probe.safetensors", probe)
    probe.eval()
    return probe, info


def predict_pooled(
    probe: AttributeProbe, pooled: np.ndarray, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Predicted value index per attribute for pooled images (N, 50, 80, 3)."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in probe.attribute_values}
    for start in range(0, len(pooled), batch_size):
        logits = probe(mx.array(pooled[start : start + batch_size], dtype=mx.float32))
        mx.eval(logits)
        for k, v in logits.items():
            out[k].append(np.array(mx.argmax(v, axis=-1)))
    return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in out.items()}


def predict_attributes(probe: AttributeProbe, pixels: np.ndarray) -> list[dict[str, str]]:
    """Attribute values the probe reads from uint8 (N, 200, 320, 3) images."""
    pred = predict_pooled(probe, pool_images(to_float(pixels)))
    names = probe.attribute_values
    return [{k: names[k][int(pred[k][i])] for k in names} for i in range(len(pixels))]


def accuracy(
    probe: AttributeProbe, pooled: np.ndarray, labels: dict[str, np.ndarray]
) -> dict[str, float]:
    """Per-attribute accuracy plus their `mean`."""
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
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pooled images (N, 50, 80, 3) float16 and label indices per attribute, from a synth folder.

    `transform` maps float (B, 200, 320, 3) images before pooling (e.g. a VQGAN round trip).
    Bad lines and unknown values raise DataError naming file and line.
    """
    data_dir = Path(data_dir)
    attr_file = data_dir / "attributes.jsonl"
    if not attr_file.is_file():
        raise DataError(
            f"{attr_file}: attributes file not found (make one with `pixelscene synth`)"
        )

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
    pooled = np.zeros((len(rows), 200 // POOL, 320 // POOL, 3), np.float16)
    for start in range(0, len(rows), chunk):
        batch = np.stack(
            [
                to_float(read_image(data_dir / "images" / r["image"]))
                for r in rows[start : start + chunk]
            ]
        )
        if transform is not None:
            batch = transform(batch)
        pooled[start : start + len(batch)] = pool_images(batch)
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


def train_probe(
    train: tuple[np.ndarray, dict[str, np.ndarray]],
    *,
    epochs: int = 8,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    channels: list[int] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> AttributeProbe:
    """Train a probe on pooled images + labels (from `load_attribute_data`); returns it in eval mode."""
    pooled, labels = train
    n = len(pooled)
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    probe = AttributeProbe(channels=channels or (48, 64, 128))
    mx.eval(probe.parameters())
    steps = max(1, epochs * (n // batch_size or 1))
    schedule = optim.cosine_decay(learning_rate, steps, learning_rate * 0.05)
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
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[start : start + batch_size]
            x = pooled[idx].astype(np.float32)
            # Attributes do not depend on left/right; flips and noise make the probe less
            # sensitive to the small artefacts generated images have.
            flip = rng.random(len(idx)) < 0.5
            x[flip] = x[flip, :, ::-1]
            x += rng.normal(0.0, 0.03, size=x.shape).astype(np.float32)
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
    channels: list[int] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Load data, train, measure on held-out real images (and their VQGAN round trip), save.

    Returns the metrics written into probe.json.
    """
    t0 = time.perf_counter()
    train = load_attribute_data(data_dir, limit)
    held_out = load_attribute_data(eval_dir, eval_limit)
    round_trip = vqgan_round_trip(vqgan_dir) if vqgan_dir is not None else None
    if round_trip is not None:
        # Train on real images and their VQGAN reconstructions, as generated images look.
        recon = load_attribute_data(data_dir, limit, transform=round_trip)
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
        progress=progress,
    )
    info: dict[str, Any] = {
        "eval_accuracy": accuracy(probe, *held_out),
        "train_accuracy": accuracy(probe, *train),
        "train_images": int(len(train[0])),
        "eval_images": int(len(held_out[0])),
        "train_data": str(data_dir),
        "eval_data": str(eval_dir),
        "epochs": epochs,
        "seed": seed,
        "load_seconds": round(load_s, 1),
        "train_seconds": round(time.perf_counter() - t0 - load_s, 1),
    }
    if round_trip is not None:
        recon_eval = load_attribute_data(eval_dir, eval_limit, transform=round_trip)
        info["eval_accuracy_vqgan_round_trip"] = accuracy(probe, *recon_eval)
        info["vqgan_model"] = str(vqgan_dir)
    save_probe(out_dir, probe, info)
    return info
