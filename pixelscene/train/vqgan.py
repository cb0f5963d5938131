"""Train the VQGAN on random crops; evaluate on whole held-out 320x200 images.

Losses: L1 + L2 reconstruction, codebook + commitment, and after `disc_start` a hinge GAN
whose weight adapts as in taming-transformers (ratio of the reconstruction and GAN gradient
norms at the decoder's last layer). The codebook is initialised from encoder outputs and
codes unused over a window are restarted on recent encoder outputs.

Everything a run needs to continue exactly is in MODEL_DIR/checkpoint/ (see train.common);
batch k and its crops are a function of (seed, k), so resuming replays the same data.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from pixelscene import model_io
from pixelscene.config import Config
from pixelscene.data.datasets import ImageDataset, batch_iterator, to_float, to_uint8
from pixelscene.errors import DataError, PixelsceneError
from pixelscene.eval.vqgan_metrics import evaluate_vqgan
from pixelscene.train import common
from pixelscene.vqgan import VQGAN, PatchDiscriminator
from pixelscene.vqgan.layers import depth_to_space
from pixelscene.vqgan.quantizer import l2_normalize, usage_stats

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
RESTART_WINDOW = 100  # steps over which code usage is counted for dead-code restarts
RESTART_UNTIL = 0.9  # no restarts in the last 10% of training


@dataclass
class TrainResult:
    step: int
    interrupted: bool
    seconds_per_step: float
    last_eval: dict[str, Any] | None
    budget_reached: bool = False  # stopped by --max-minutes (exported, resumable)


def random_crops(
    images: np.ndarray, size: int, pad_rows: list[int], rng: np.random.Generator
) -> np.ndarray:
    """Random size x size crops of uint8 (B, H, W, C) images padded as the model pads them."""
    padded = np.pad(images, [(0, 0), tuple(pad_rows), (0, 0), (0, 0)], mode="edge")
    B, H, W, _ = padded.shape
    if size > min(H, W):
        raise PixelsceneError(f"train_vqgan.crop_size {size} exceeds the padded image {H}x{W}")
    ys = rng.integers(0, H - size + 1, size=B)
    xs = rng.integers(0, W - size + 1, size=B)
    return np.stack(
        [padded[i, y : y + size, x : x + size] for i, (y, x) in enumerate(zip(ys, xs, strict=True))]
    )


def readable_images(ds: ImageDataset, count: int) -> list[np.ndarray]:
    """The first `count` readable images of a dataset (unreadable ones reported, skipped)."""
    images: list[np.ndarray] = []
    for i in range(len(ds)):
        if len(images) == count:
            break
        image = _load_uint8(ds, i)
        if image is not None:
            images.append(image)
    if not images:
        raise DataError(f"{ds.image_dir}: no readable images to evaluate on")
    return images


def _load_uint8(ds: ImageDataset, idx: int) -> np.ndarray | None:
    try:
        return ds.load_uint8(idx)
    except DataError as e:
        ds._problem(str(e))
        return None


class VQGANTrainer:
    """Owns the model, discriminator, optimizers and compiled steps of one training run."""

    def __init__(self, cfg: Config, out_dir: str | Path, seed: int = 0):
        self.cfg = cfg
        self.tc = cfg.train_vqgan
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.step = 0
        self.elapsed = 0.0  # seconds in training steps
        self.wall_s = 0.0  # wall time of earlier sessions of this run, evaluations included
        self.budget = common.TimeBudget()  # this session's, counting on from wall_s
        self.restarts = 0
        mx.random.seed(seed)
        vc = cfg.vqgan
        self.model = VQGAN(vc)
        self.model.quantizer.commitment_cost = self.tc.commitment_weight
        self.disc = PatchDiscriminator(vc.in_channels, vc.disc_channels, vc.disc_layers)
        self.opt_g = optim.Adam(
            learning_rate=common.warmup_cosine(
                self.tc.learning_rate, self.tc.warmup_steps, self.tc.steps
            ),
            betas=[0.9, 0.99],
        )
        self.opt_d = optim.Adam(learning_rate=self.tc.disc_learning_rate, betas=[0.5, 0.9])
        self.opt_g.init(self.model.trainable_parameters())
        self.opt_d.init(self.disc.trainable_parameters())
        self.counts = np.zeros(vc.codebook_size, dtype=np.int64)
        self.window_usage = (0.0, 0.0)
        self._steps: dict[str, Any] = {}

    # ---- checkpoints -------------------------------------------------------------------
    def save(self) -> None:
        """Checkpoint (fp32, optimizer, RNG, counters) and export the model folder."""
        meta = {
            "step": self.step,
            "seed": self.seed,
            "elapsed_s": self.elapsed,
            "wall_s": self.budget.spent_s,
            "restarts": self.restarts,
            "data": {"seed": self.seed, "next_batch": self.step},
            "config": self.cfg.to_dict(),
        }
        arrays = {"code_counts": mx.array(self.counts.astype(np.int32))}
        common.save_checkpoint(
            self.out_dir / CHECKPOINT,
            modules={"vqgan": self.model, "discriminator": self.disc},
            optimizers={"vqgan": self.opt_g, "discriminator": self.opt_d},
            meta=meta,
            arrays=arrays,
        )
        self.reseed()
        self.export()

    def reseed(self) -> None:
        """MLX's random state cannot be restored, so it restarts from (seed, step) at every
        checkpoint, in a straight run and in a resumed one alike."""
        mx.random.seed(int(np.random.default_rng([self.seed, 3, self.step]).integers(2**31)))

    def export(self, dtype: mx.Dtype = mx.float16) -> None:
        """MODEL_DIR/config.json + vqgan.safetensors (float16 by default): a usable model."""
        model_io.save_model_config(self.out_dir, self.cfg)
        model_io.save_weights(self.out_dir / "vqgan.safetensors", self.model, dtype=dtype)

    def load(self) -> None:
        meta, arrays = common.load_checkpoint(
            self.out_dir / CHECKPOINT,
            modules={"vqgan": self.model, "discriminator": self.disc},
            optimizers={"vqgan": self.opt_g, "discriminator": self.opt_d},
        )
        self.step = int(meta["step"])
        self.seed = int(meta["seed"])
        self.elapsed = float(meta.get("elapsed_s", 0.0))
        self.wall_s = float(meta.get("wall_s", self.elapsed))
        self.restarts = int(meta.get("restarts", 0))
        self.reseed()
        self.counts = np.array(arrays["code_counts"]).astype(np.int64)
        self._steps = {}  # optimizer states were replaced: recompile

    # ---- losses and compiled steps -----------------------------------------------------
    def _rec_loss(self, recon: mx.array, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        l1 = mx.mean(mx.abs(recon - x))
        l2 = mx.mean(mx.square(recon - x))
        return self.tc.l1_weight * l1 + self.tc.l2_weight * l2, l1, l2

    def _adaptive_weight(self, x: mx.array) -> mx.array:
        """disc_weight * |grad rec| / |grad gan| at the decoder's last conv weight (detached)."""
        model, disc = self.model, self.disc
        z_q, _, _ = model.quantizer(model.encoder(x))
        h = mx.stop_gradient(model.decoder.features(z_q))
        bias = model.decoder.conv_out.bias
        p = model.decoder.patch_size

        def head(w: mx.array) -> mx.array:
            out = mx.conv2d(h, w, padding=1) + bias
            return depth_to_space(out, p) if p > 1 else out

        w = model.decoder.conv_out.weight
        g_rec = mx.grad(lambda w: self._rec_loss(head(w), x)[0])(w)
        g_gan = mx.grad(lambda w: -mx.mean(disc(head(w))))(w)
        ratio = mx.linalg.norm(g_rec.reshape(-1)) / (mx.linalg.norm(g_gan.reshape(-1)) + 1e-4)
        return mx.stop_gradient(mx.clip(ratio, 0.0, 1e4) * self.tc.disc_weight)

    def _gen_loss(self, model: VQGAN, x: mx.array, gan_weight: mx.array | None):
        z = model.encoder(x)
        z_q, indices, vq_loss = model.quantizer(z)
        recon = model.decoder(z_q)
        rec, l1, l2 = self._rec_loss(recon, x)
        total = rec + vq_loss
        g_loss = mx.array(0.0)
        if gan_weight is not None:
            g_loss = -mx.mean(self.disc(recon))
            total = total + gan_weight * g_loss
        aux = (l1, l2, vq_loss, g_loss, indices, z, recon)
        return total, aux

    def _build_steps(self) -> None:
        model, disc, opt_g, opt_d = self.model, self.disc, self.opt_g, self.opt_d
        state = [model.state, disc.state, opt_g.state, opt_d.state, mx.random.state]
        gen_grad = nn.value_and_grad(model, self._gen_loss)

        @partial(mx.compile, inputs=state, outputs=state)
        def ae_step(x: mx.array):
            (total, aux), grads = gen_grad(model, x, None)
            opt_g.update(model, grads)
            l1, l2, vq, _, indices, z, _ = aux
            return mx.stack([total, l1, l2, vq]), indices, z

        def d_loss_fn(disc: PatchDiscriminator, real: mx.array, fake: mx.array) -> mx.array:
            return mx.mean(nn.relu(1.0 - disc(real))) + mx.mean(nn.relu(1.0 + disc(fake)))

        d_grad = nn.value_and_grad(disc, d_loss_fn)

        @partial(mx.compile, inputs=state, outputs=state)
        def gan_step(x: mx.array):
            weight = self._adaptive_weight(x)
            (total, aux), grads = gen_grad(model, x, weight)
            opt_g.update(model, grads)
            l1, l2, vq, g_loss, indices, z, recon = aux
            d_loss, d_grads = d_grad(disc, x, mx.stop_gradient(recon))
            opt_d.update(disc, d_grads)
            return mx.stack([total, l1, l2, vq, g_loss, d_loss, weight]), indices, z

        self._steps = {"ae": ae_step, "gan": gan_step}

    def train_step(self, x: mx.array) -> tuple[dict[str, float], np.ndarray, mx.array]:
        """One optimisation step on a batch of crops (B, S, S, 3) in [-1, 1]."""
        if not self._steps:
            self._build_steps()
        kind = "gan" if self.step >= self.tc.disc_start else "ae"
        losses, indices, z = self._steps[kind](x)
        mx.eval(losses, indices, z)
        self.step += 1
        names = ["loss", "l1", "l2", "vq", "g", "d", "gan_w"]
        values = dict(zip(names, np.array(losses).tolist(), strict=False))
        return values, np.array(indices), z

    # ---- codebook maintenance ----------------------------------------------------------
    def init_codebook(self, images: np.ndarray) -> None:
        """Set every code to a random encoder output of whole (padded) training images."""
        x = self.model.pad(mx.array(to_float(images)))
        z = np.array(l2_normalize(self.model.encoder(x))).reshape(-1, self.cfg.vqgan.codebook_dim)
        rng = np.random.default_rng([self.seed, 1])
        self.model.quantizer.restart_codes(np.ones(self.cfg.vqgan.codebook_size, bool), z, rng)
        mx.eval(self.model.parameters())

    def maybe_restart_codes(self, z: mx.array) -> int:
        """Every RESTART_WINDOW steps: restart codes used less than dead_code_threshold times
        their fair share over the window; reset their Adam moments too."""
        if self.step % RESTART_WINDOW:
            return 0
        self.window_usage = usage_stats(self.counts)
        fair = self.counts.sum() / len(self.counts)
        dead = self.counts < self.tc.dead_code_threshold * fair
        self.counts[:] = 0
        if self.step > RESTART_UNTIL * self.tc.steps or not dead.any():
            return 0
        rng = np.random.default_rng([self.seed, 2, self.step])
        n = self.model.quantizer.restart_codes(dead, np.array(z).reshape(-1, z.shape[-1]), rng)
        state = self.opt_g.state.get("quantizer", {}).get("codebook")
        if state:
            keep = mx.array(~dead[:, None])
            self.opt_g.state["quantizer"]["codebook"] = {k: v * keep for k, v in state.items()}
        mx.eval(self.model.parameters(), self.opt_g.state)
        self.restarts += n
        return n


def save_grid(path: Path, originals: np.ndarray, recons: np.ndarray) -> None:
    """A PNG with each original above its reconstruction, images side by side."""
    from PIL import Image

    rows = [np.concatenate(list(originals), axis=1), np.concatenate(list(recons), axis=1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def train_vqgan(
    cfg: Config | None,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    steps: int | None = None,
    resume: bool = False,
    eval_dir: str | Path | None = None,
    seed: int = 0,
    progress_bar: bool | None = None,
    stop_after: int | None = None,
    max_minutes: float | None = None,
) -> TrainResult:
    """Train (or resume) a VQGAN into out_dir; see `pixelscene train vqgan --help`.

    On resume the configuration comes from the checkpoint; `steps` may extend the run (which
    also stretches the learning-rate schedule). SIGINT/SIGTERM, or reaching `stop_after`,
    save a checkpoint and return with `interrupted=True`; `max_minutes` of wall time over the
    whole run (resumes included) ends it early, evaluated and exported (`budget_reached`).
    """
    out_dir = Path(out_dir)
    ckpt = out_dir / CHECKPOINT
    common.TimeBudget.check(max_minutes)  # before any work
    if resume:
        meta = common.read_checkpoint_meta(ckpt)
        cfg = Config.from_dict(meta["config"])
        seed = int(meta["seed"])
    elif (ckpt / "meta.json").exists():
        raise PixelsceneError(f"{ckpt} exists: pass --resume to continue it, or another --out")
    if cfg is None:
        raise PixelsceneError("a config is needed to start a new run")
    if steps is not None:
        cfg.train_vqgan.steps = steps
    tc = cfg.train_vqgan

    common.prepare_out_dir(out_dir)
    trainer = VQGANTrainer(cfg, out_dir, seed=seed)
    if resume:
        trainer.load()
    trainer.budget = common.TimeBudget(max_minutes, trainer.wall_s)
    dataset = ImageDataset(data_dir)
    eval_set = ImageDataset(eval_dir) if eval_dir else dataset
    if not eval_dir:
        log.warning("no --eval-data: evaluating on training images")
    eval_images = readable_images(eval_set, tc.eval_images)

    batches = batch_iterator(
        dataset, tc.batch_size, seed=seed, start_batch=trainer.step, load=_load_uint8
    )
    if trainer.step == 0:
        first = next(batch_iterator(dataset, tc.batch_size, seed=seed + 1, load=_load_uint8))
        trainer.init_codebook(first)

    def evaluate() -> dict[str, Any]:
        result = evaluate_vqgan(trainer.model, eval_images)
        usage, ppl = trainer.window_usage
        row = {
            "step": trainer.step,
            **result,
            "train_usage": usage,
            "train_perplexity": ppl,
            "elapsed_s": round(trainer.elapsed, 1),
            "split": "eval" if eval_dir else "train",
        }
        _append_jsonl(out_dir / "eval.jsonl", row)
        log.info("step %d eval: %s", trainer.step, json.dumps(row))
        return row

    def sample() -> None:
        originals = np.stack(eval_images[:4])
        recon = trainer.model.reconstruct(mx.array(to_float(originals)))
        save_grid(
            out_dir / "samples" / f"step_{trainer.step:06d}.png",
            originals,
            to_uint8(np.array(recon)),
        )

    throughput = common.Throughput()
    bar = common.progress(
        tc.steps, initial=trainer.step, desc="vqgan", disable=progress_bar is False
    )
    last_eval: dict[str, Any] | None = None
    step_times: list[float] = []
    interrupted = budget_reached = False
    try:
        with common.stop_on_signals() as stop:
            while trainer.step < tc.steps:
                if trainer.budget.reached():
                    budget_reached = True
                    break
                images = next(batches)
                t0 = time.perf_counter()
                rng = np.random.default_rng([seed, 0, trainer.step])
                crops = random_crops(images, tc.crop_size, cfg.vqgan.pad_rows, rng)
                values, indices, z = trainer.train_step(mx.array(to_float(crops)))
                trainer.counts += np.bincount(indices.reshape(-1), minlength=len(trainer.counts))
                trainer.maybe_restart_codes(z)
                dt = time.perf_counter() - t0
                trainer.elapsed += dt
                step_times.append(dt)
                rate = throughput.add(tc.batch_size)
                bar.update(1)
                if trainer.step % tc.log_every == 0 or trainer.step == 1:
                    usage = trainer.window_usage[0]
                    bar.set_postfix(
                        {
                            **common.format_losses(values),
                            "use": f"{usage:.2f}",
                            "img/s": f"{rate:.1f}",
                        }
                    )
                    _append_jsonl(
                        out_dir / "train.jsonl", {"step": trainer.step, **values, "img_per_s": rate}
                    )
                if trainer.step % tc.sample_every == 0:
                    sample()
                if trainer.step % tc.eval_every == 0:
                    last_eval = evaluate()
                if trainer.step % tc.checkpoint_every == 0:
                    trainer.save()
                if stop or trainer.step == stop_after:
                    interrupted = True
                    break
            if not interrupted and (last_eval is None or last_eval["step"] != trainer.step):
                last_eval = evaluate()
            trainer.save()
    finally:
        bar.close()
        batches.close()
    if dataset.problems:
        log.warning("training data: %s", dataset.summary())
    sec = float(np.median(step_times)) if step_times else float("nan")
    return TrainResult(trainer.step, interrupted, sec, last_eval, budget_reached)
