"""Attribute probe: a small CNN that reads scene attributes back from a 320x200 image.

It is trained on synthetic images and their ground-truth attributes (attributes.jsonl, see
`pixelscene.data.attribute_data`; the trainer is `pixelscene.train.probe`), and measures
whether generated images show what their prompt asked for. Images are average-pooled 2x
(200x320 -> 100x160) first: small objects (a 6-pixel-wide tower, a row of cacti) survive
that, and the pooled input trains in minutes on a CPU.

A probe on disk is a folder: `probe.safetensors` + `probe.json` (architecture, input pooling
and size, attribute vocabularies and the accuracy measured on held-out real images when it was
trained).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from pixelscene.data.attribute_data import POOL, pool_images
from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.data.datasets import to_float
from pixelscene.errors import ModelLoadError
from pixelscene.model_io import PACKAGE_DIR, atomic_write_bytes, load_weights, save_weights

BUNDLED_PROBE_DIR = PACKAGE_DIR / "models" / "probe"
PROBE_FORMAT = 2
DEFAULT_CHANNELS = (48, 96, 128)
MAP_ATTRIBUTES = ("landmark", "vegetation")  # the sprites a probe with `maps` locates


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
        maps: bool = False,
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
            "maps": maps,
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
        # With `maps`, a per-position head on the second stage names the landmark and the
        # vegetation under each cell (trained on the renderer's sprite masks): it teaches the
        # stages where the small sprites are, and its max over positions feeds the classifier.
        self.map_sizes = {k: len(self.attribute_values[k]) for k in MAP_ATTRIBUTES} if maps else {}
        n_map = sum(self.map_sizes.values())
        if maps:
            self.map_head = nn.Linear(c2, n_map)
        self.fc = nn.Linear(rows * c3 + 2 * c3 + c2 + n_map, hidden)
        self.drop = nn.Dropout(dropout)
        self.heads = {k: nn.Linear(hidden, len(v)) for k, v in self.attribute_values.items()}
        # He initialisation: with MLX's default (uniform, variance 1/(3 fan_in)) the signal
        # shrinks ~2.5x per ReLU layer and this seven-layer stack barely trains.
        for layer in (self.embed1, self.conv1, self.embed2, self.conv2, self.embed3, self.conv3):
            fan_in = layer.weight.shape[1]
            layer.weight = mx.random.normal(layer.weight.shape) * (2.0 / fan_in) ** 0.5
            layer.bias = mx.zeros(layer.bias.shape)

    @property
    def map_cell(self) -> int:
        """Image pixels per side of one cell of the sprite maps (the second stage's grid)."""
        return self.pool * self.stem * 2

    def __call__(self, x: mx.array, with_maps: bool = False) -> dict[str, mx.array]:
        """Logits per attribute; with `with_maps` also "<attribute>_map": (B, rows, cols, n)
        per-cell logits for the sprite attributes (a probe built with `maps`)."""
        B = x.shape[0]  # x: (B, 100, 160, 3) pooled images in [-1, 1]
        x = nn.relu(self.norm1(self.embed1(patchify(x, self.stem))))  # (B, 25, 40, c1)
        x = nn.relu(self.conv1(conv3x3_columns(x)))
        x = nn.relu(self.norm2(self.embed2(patchify(pad_to_multiple(x, 2), 2))))  # (B, 13, 20, c2)
        x = nn.relu(self.conv2(conv3x3_columns(x)))
        mid_max = x.reshape(B, -1, x.shape[-1]).max(axis=1)
        extra = []
        if self.map_sizes:
            cell_logits = self.map_head(x)  # (B, 13, 20, n_map)
            extra.append(cell_logits.reshape(B, -1, cell_logits.shape[-1]).max(axis=1))
        x = nn.relu(self.norm3(self.embed3(patchify(pad_to_multiple(x, 2), 2))))  # (B, 7, 10, c3)
        x = nn.relu(self.conv3(conv3x3_columns(x)))
        rows = x.mean(axis=2).reshape(B, -1)
        cells = x.reshape(B, -1, x.shape[-1])
        feats = [rows, cells.max(axis=1), cells.mean(axis=1), mid_max, *extra]
        x = self.drop(nn.relu(self.fc(mx.concatenate(feats, axis=1))))
        out = {k: head(x) for k, head in self.heads.items()}
        if with_maps and self.map_sizes:
            start = 0
            for k, n in self.map_sizes.items():
                out[f"{k}_map"] = cell_logits[..., start : start + n]
                start += n
        return out


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
        if fmt != PROBE_FORMAT:
            raise ValueError(f"unknown format {fmt!r}; retrain it with `pixelscene train probe`")
        args = (info["attributes"], info["channels"], info["hidden"], info["dropout"])
        probe = AttributeProbe(
            *args, info["input_size"], info["pool"], info["stem"], info.get("maps", False)
        )
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
