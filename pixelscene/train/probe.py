"""Train the attribute probe (`pixelscene.eval.probe`) on labelled synthetic scenes.

A trainer of the common shape (`train.loop`) that cannot resume: it trains for whole epochs
on pooled images in memory, with flips, colour jitter, noise and a VQGAN-like blur, then
measures the probe as shipped (weights rounded to float16) on held-out scenes and writes the
probe folder with those figures. Under `mlx.launch` each rank trains on its part of every
batch (`train.distributed`); rank 0 measures and writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from pixelscene.data.attribute_data import (
    IMAGE_HW,
    POOL,
    load_attribute_data,
    load_sprite_maps,
)
from pixelscene.errors import PixelsceneError
from pixelscene.eval.probe import (
    DEFAULT_CHANNELS,
    AttributeProbe,
    accuracy,
    resolve_probe_dir,
    save_probe,
)
from pixelscene.model_io import load_weights, round_to_float16
from pixelscene.train import common, distributed, loop
from pixelscene.train.loop import TrainResult

Labelled = tuple[np.ndarray, dict[str, np.ndarray]]  # pooled images, value index per attribute


def vqgan_round_trip(model_dir: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    """A transform that passes images through a model folder's image tokenizer (encode,
    decode): a VQGAN, or a categorical tokenizer (`pixelscene.image_tokenizers`)."""
    from pixelscene.image_tokenizers import load_tokenizer

    vqgan = load_tokenizer(model_dir)

    def transform(batch: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(batch), 16):
            codes = vqgan.encode(mx.array(batch[start : start + 16]))
            img = vqgan.decode(codes)
            mx.eval(img)
            out.append(np.array(img))
        return np.concatenate(out)

    return transform


def augment(
    x: np.ndarray,
    rng: np.random.Generator,
    degrade: float = 0.5,
    flip: np.ndarray | None = None,
) -> np.ndarray:
    """Training augmentation for pooled float32 images (B, H, W, 3).

    Horizontal flips (attributes do not depend on left/right; `flip` says which images, else
    half at random), colour jitter, mild noise, and for a `degrade` fraction of images a blur
    like a VQGAN decoder's: average-pool by 2 or 4 and upsample back (nearest or bilinear),
    since generated images are decoded from a 13x20 code grid and look softer than the crisp
    renders; for another such fraction, a tenth of the 8x8-pixel patches flattened to their
    mean colour, as a patch tokenizer that misses a patch's detail draws it.
    """
    B, H, W, C = x.shape
    flip = rng.random(B) < 0.5 if flip is None else flip
    x[flip] = x[flip, :, ::-1]
    k = 8 * H // IMAGE_HW[0]  # pooled pixels per 8x8-pixel patch
    patchy = np.flatnonzero(rng.random(B) < degrade)
    if k >= 2 and len(patchy) and H % k == 0 and W % k == 0:
        p = x[patchy].reshape(len(patchy), H // k, k, W // k, k, C)
        hit = rng.random((len(patchy), H // k, 1, W // k, 1, 1)) < 0.1
        p = np.where(hit, p.mean(axis=(2, 4), keepdims=True), p)
        x[patchy] = p.reshape(len(patchy), H, W, C)
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


class ProbeTrainer(loop.Trainer):
    """A probe, its optimizer and compiled step, and the labelled scenes it learns and is
    measured on. Batches come from one generator in order: the run cannot resume."""

    desc = "probe"
    checkpoint = None
    data_parallel = True

    def __init__(
        self,
        out_dir: str | os.PathLike,
        train: Labelled,
        held_out: Labelled,
        *,
        round_trip: Labelled | None = None,
        maps: dict[str, np.ndarray] | None = None,
        map_weight: float = 1.0,
        info: dict[str, Any] | None = None,
        epochs: int,
        batch_size: int,
        learning_rate: float,
        seed: int,
        channels: list[int] | None,
        degrade: float,
        init_from: str | os.PathLike | None = None,
    ):
        super().__init__(out_dir, seed)
        self.started = time.perf_counter()
        self.train, self.held_out, self.round_trip = train, held_out, round_trip
        self.maps, self.map_weight = maps, map_weight
        self.degrade = degrade
        pooled, _ = train
        n, H, W, _ = pooled.shape
        mx.random.seed(seed)
        self.rng = np.random.default_rng(seed)
        self.probe = AttributeProbe(
            channels=channels or DEFAULT_CHANNELS,
            input_size=(H, W),
            pool=IMAGE_HW[0] // H,
            maps=maps is not None,
        )
        if init_from is not None:  # a warm start: that probe's weights, this run's schedule
            load_weights(resolve_probe_dir(init_from) / "probe.safetensors", self.probe)
        mx.eval(self.probe.parameters())
        self.batch_size = self.items_per_step = min(batch_size, n)  # over all ranks
        self.shard.part(self.batch_size)  # fails early if the batch does not split
        self.per_epoch = n // self.batch_size
        self.steps = epochs * self.per_epoch
        schedule = common.warmup_cosine(
            learning_rate,
            min(100, self.steps // 10),
            self.steps,
            final_frac=0.02,
            start_lr=0.1 * learning_rate,
        )
        self.opt = optim.AdamW(learning_rate=schedule, weight_decay=1e-4)
        self.modules, self.optimizers = {"probe": self.probe}, {"probe": self.opt}
        self.names = list(self.probe.attribute_values)
        self.order = np.arange(n)
        self.info = dict(info or {})  # what probe.json records besides the architecture
        self.measured = False
        self._build()
        self.probe.train()

    def _build(self) -> None:
        probe, optimizer, names, group = self.probe, self.opt, self.names, self.group
        map_names, map_weight = list(probe.map_sizes), self.map_weight

        def loss_fn(model, x, ys, map_ys):
            logits = model(x, with_maps=bool(map_names))
            loss = sum(
                nn.losses.cross_entropy(logits[k], y, reduction="mean")
                for k, y in zip(names, ys, strict=True)
            )
            for k, y in zip(map_names, map_ys, strict=True):
                # a cell with a sprite weighs 4x a background cell; -1 (a sprite's edge) nothing
                none = probe.attribute_values[k].index("none")
                w = mx.where(y < 0, 0.0, mx.where(y == none, 1.0, 4.0))
                ce = nn.losses.cross_entropy(logits[f"{k}_map"], mx.maximum(y, 0))
                # the whole batch's weight (per rank): ranks' losses average to the batch's
                weight = mx.stop_gradient(distributed.mean(w.sum(), group))
                loss = loss + map_weight * (ce * w).sum() / mx.maximum(weight, 1.0)
            return loss

        self._state = state = [probe.state, optimizer.state, mx.random.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step(x, ys, map_ys):
            loss, grads = nn.value_and_grad(probe, loss_fn)(probe, x, ys, map_ys)
            optimizer.update(probe, nn.average_gradients(grads, group))
            return distributed.mean(loss, group)

        self._step = step

    def batch(self) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        pooled, labels = self.train
        b = self.step % self.per_epoch
        if b == 0:  # a new epoch
            self.order = self.rng.permutation(len(pooled))
        idx = np.sort(self.order[b * self.batch_size : (b + 1) * self.batch_size])
        flip = self.rng.random(len(idx)) < 0.5
        x = augment(pooled[idx].astype(np.float32), self.rng, self.degrade, flip)
        # every rank draws and augments the whole batch (one generator), then keeps its part
        mine = self.shard.part(len(idx))
        map_ys = []
        for k in self.probe.map_sizes:
            m = self.maps[k][idx].astype(np.int32)
            m[flip] = m[flip, :, ::-1]
            map_ys.append(m[mine])
        return x[mine], [labels[k][idx[mine]] for k in self.names], map_ys

    def update(self, batch: tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]) -> dict:
        x, ys, map_ys = batch
        as_mx = [mx.array(y) for y in ys], [mx.array(m) for m in map_ys]
        loss = self._step(mx.array(x), *as_mx)
        mx.eval(self._state)
        self.step += 1
        return {"loss": float(loss)}

    def evaluate(self) -> dict[str, Any]:
        """Accuracy of the probe as shipped: weights rounded to float16 as save_probe writes
        them. Only at the end of the run (it changes the weights)."""
        train_s = time.perf_counter() - self.started
        self.probe.eval()
        round_to_float16(self.probe)
        pooled, labels = self.train
        self.info = {
            "eval_accuracy": accuracy(self.probe, *self.held_out),
            "train_accuracy": accuracy(
                self.probe, pooled[:1000], {k: v[:1000] for k, v in labels.items()}
            ),
            "train_images": int(len(pooled)),
            "eval_images": int(len(self.held_out[0])),
            **self.info,
            "train_seconds": round(train_s, 1),
        }
        if self.round_trip is not None:
            self.info["eval_accuracy_vqgan_round_trip"] = accuracy(self.probe, *self.round_trip)
            self.info["eval_images_vqgan_round_trip"] = len(self.round_trip[0])
        self.measured = True
        return self.info

    def export(self) -> None:
        if self.measured:  # an interrupted run writes nothing: a probe without figures
            save_probe(self.out_dir, self.probe, self.info)


def _concat(parts: list[Labelled]) -> Labelled:
    """Labelled scenes of several folders as one set, in folder order."""
    if len(parts) == 1:
        return parts[0]
    labels = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    return np.concatenate([p[0] for p in parts]), labels


def _warm_start_architecture(init_from: str | os.PathLike, pool: int) -> tuple[list[int], bool]:
    """The channels and sprite maps of the probe folder a run starts from (its pooling must
    be this run's)."""
    from pixelscene.eval.probe import load_probe

    _, init_info = load_probe(init_from)
    if init_info["pool"] != pool:
        raise PixelsceneError(
            f"{init_from}: that probe reads images pooled by {init_info['pool']}, "
            f"this run pools by {pool} (--pool {init_info['pool']} to start from it)"
        )
    return list(init_info["channels"]), bool(init_info.get("maps", False))


def train_and_save(
    data_dir: str | os.PathLike | list[str | os.PathLike],
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
    maps: bool = True,
    map_weight: float = 1.0,
    init_from: str | os.PathLike | None = None,
    progress_bar: bool | None = None,
    max_minutes: float | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Load data, train, measure on held-out real images (and their VQGAN round trip), save.

    With `vqgan_dir`, the first `round_trip_limit` held-out images are also passed through that
    VQGAN and measured (how the probe does on images that look generated); with
    `train_on_round_trip` the training images' reconstructions are added to the training set
    (slow: a VQGAN round trip per image). Several `data_dir` folders are trained on together
    (`limit` images from each). `init_from`, a probe folder, starts the run from its weights
    (and its channels and sprite maps). The result's `last_eval` holds the figures written
    into probe.json.
    """
    common.TimeBudget.check(max_minutes)
    if init_from is not None:
        channels, maps = _warm_start_architecture(init_from, pool)
    out_dir = common.prepare_out_dir(out_dir)
    t0 = time.perf_counter()
    data_dirs = list(data_dir) if isinstance(data_dir, list | tuple) else [data_dir]
    with distributed.main_first(distributed.init()):  # rank 0 writes the caches first
        train = _concat(
            [load_attribute_data(d, limit, pool=pool, cache_dir=cache_dir) for d in data_dirs]
        )
        sprite_maps = None
        if maps:  # the maps' cells are the probe's second-stage grid: pool x 4 (stem) x 2 px
            per_dir = [load_sprite_maps(d, limit, pool * 8, cache_dir) for d in data_dirs]
            sprite_maps = {k: np.concatenate([m[k] for m in per_dir]) for k in per_dir[0]}
        held_out = load_attribute_data(eval_dir, eval_limit, pool=pool, cache_dir=cache_dir)
    round_trip = vqgan_round_trip(vqgan_dir) if vqgan_dir is not None else None
    if round_trip is not None and train_on_round_trip:
        if sprite_maps is not None:
            sprite_maps = {k: np.concatenate([v, v]) for k, v in sprite_maps.items()}
        recon = [load_attribute_data(d, limit, transform=round_trip, pool=pool) for d in data_dirs]
        train = _concat([train, *recon])
    load_s = time.perf_counter() - t0
    info: dict[str, Any] = {
        "train_data": str(data_dirs[0]) if len(data_dirs) == 1 else [str(d) for d in data_dirs],
        "eval_data": str(eval_dir),
        "epochs": epochs,
        "seed": seed,
        "degrade": degrade,
        "map_weight": map_weight if maps else None,
        "load_seconds": round(load_s, 1),
    }
    if init_from is not None:
        info["init_from"] = str(init_from)
    recon_eval = None
    if round_trip is not None:
        n = min(round_trip_limit, len(held_out[0]))
        recon_eval = load_attribute_data(eval_dir, n, transform=round_trip, pool=pool)
        info["vqgan_model"] = str(vqgan_dir)
    trainer = ProbeTrainer(
        out_dir,
        train,
        held_out,
        round_trip=recon_eval,
        maps=sprite_maps,
        map_weight=map_weight,
        info=info,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        channels=channels,
        degrade=degrade,
        init_from=init_from,
    )
    trainer.start(False, max_minutes)
    # measured once, at the end; no checkpoints
    plan = loop.Plan(steps=trainer.steps, log_every=10, eval_every=trainer.steps)
    return loop.run(trainer, plan, progress_bar=progress_bar, stop_after=stop_after)
