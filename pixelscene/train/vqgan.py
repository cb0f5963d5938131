"""Train the VQGAN on random crops; evaluate on whole held-out 320x200 images.

Losses: L1 + L2 reconstruction, codebook + commitment, and after `disc_start` a hinge GAN
whose weight adapts as in taming-transformers (ratio of the reconstruction and GAN gradient
norms at the decoder's last layer). The codebook is initialised from encoder outputs and
codes unused over a window are restarted on recent encoder outputs.

Everything a run needs to continue exactly is in MODEL_DIR/checkpoint/ (see train.common);
batch k and its crops are a function of (seed, k), so resuming replays the same data. Under
`mlx.launch` each rank loads and trains on its part of every batch (`train.distributed`);
code usage is counted over all ranks and dead codes restart from all ranks' encoder outputs.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from pixelscene import model_io
from pixelscene.config import Config
from pixelscene.data.datasets import ImageDataset, batch_iterator, to_float
from pixelscene.errors import PixelsceneError
from pixelscene.eval.vqgan_metrics import evaluate_vqgan
from pixelscene.train import common, distributed, loop
from pixelscene.train.distributed import WHOLE, Shard
from pixelscene.train.loop import TrainResult
from pixelscene.vqgan import VQGAN, PatchDiscriminator
from pixelscene.vqgan.layers import depth_to_space
from pixelscene.vqgan.quantizer import l2_normalize, usage_stats

log = logging.getLogger(__name__)

CHECKPOINT = loop.CHECKPOINT
RESTART_WINDOW = 100  # steps over which code usage is counted for dead-code restarts
RESTART_UNTIL = 0.9  # no restarts in the last 10% of training


def random_crops(
    images: np.ndarray,
    size: int,
    pad_rows: list[int],
    rng: np.random.Generator,
    shard: Shard = WHOLE,
) -> np.ndarray:
    """Random size x size crops of uint8 (B, H, W, C) images padded as the model pads them;
    the images are the shard's part of a batch whose crop positions are all drawn."""
    padded = np.pad(images, [(0, 0), tuple(pad_rows), (0, 0), (0, 0)], mode="edge")
    B, H, W, _ = padded.shape
    if size > min(H, W):
        raise PixelsceneError(f"train_vqgan.crop_size {size} exceeds the padded image {H}x{W}")
    mine = shard.part(B * shard.size)
    ys = rng.integers(0, H - size + 1, size=B * shard.size)[mine]
    xs = rng.integers(0, W - size + 1, size=B * shard.size)[mine]
    return np.stack(
        [padded[i, y : y + size, x : x + size] for i, (y, x) in enumerate(zip(ys, xs, strict=True))]
    )


class VQGANTrainer(loop.Trainer):
    """Owns the model, discriminator, optimizers and compiled steps of one training run.

    `data` (the training images) and `eval_images` are needed by `run` only; the steps and
    the codebook maintenance work without them.
    """

    desc = "vqgan"
    data_parallel = True

    def __init__(
        self,
        cfg: Config,
        out_dir: str | Path,
        seed: int = 0,
        data: ImageDataset | None = None,
        eval_images: list[np.ndarray] | None = None,
        eval_split: str = "eval",
    ):
        super().__init__(out_dir, seed)
        self.cfg = cfg
        self.tc = cfg.train_vqgan
        self.items_per_step = self.tc.batch_size  # over all ranks
        self.shard.part(self.tc.batch_size)  # fails early if the batch does not split
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
        self.modules = {"vqgan": self.model, "discriminator": self.disc}
        self.optimizers = {"vqgan": self.opt_g, "discriminator": self.opt_d}
        self.counts = np.zeros(vc.codebook_size, dtype=np.int64)
        self.window_usage = (0.0, 0.0)
        self._steps: dict[str, Any] = {}
        self.data = data
        self.eval_images = eval_images or []
        self.eval_split = eval_split
        self._batches = None

    # ---- checkpoints -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "restarts": self.restarts,
            "data": {"seed": self.seed, "next_batch": self.step},
            "config": self.cfg.to_dict(),
        }

    def arrays(self) -> dict[str, mx.array]:
        return {"code_counts": mx.array(self.counts.astype(np.int32))}

    def restore(self, meta: dict[str, Any], arrays: dict[str, mx.array]) -> None:
        self.restarts = int(meta.get("restarts", 0))
        self.counts = np.array(arrays["code_counts"]).astype(np.int64)
        self._steps = {}  # optimizer states were replaced: recompile

    def export(self, dtype: mx.Dtype = mx.float16) -> None:
        """MODEL_DIR/config.json + vqgan.safetensors (float16 by default): a usable model."""
        model_io.save_model_config(self.out_dir, self.cfg)
        model_io.save_weights(self.out_dir / "vqgan.safetensors", self.model, dtype=dtype)

    # ---- losses and compiled steps -----------------------------------------------------
    def _rec_loss(self, recon: mx.array, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        l1 = mx.mean(mx.abs(recon - x))
        l2 = mx.mean(mx.square(recon - x))
        return self.tc.l1_weight * l1 + self.tc.l2_weight * l2, l1, l2

    def _adaptive_weight(self, x: mx.array) -> mx.array:
        """disc_weight * |grad rec| / |grad gan| at the decoder's last conv weight (detached),
        of the gradients averaged over the ranks."""
        model, disc = self.model, self.disc
        z_q, _, _ = model.quantizer(model.encoder(x))
        h = mx.stop_gradient(model.decoder.features(z_q))
        bias = model.decoder.conv_out.bias
        p = model.decoder.patch_size

        def head(w: mx.array) -> mx.array:
            out = mx.conv2d(h, w, padding=1) + bias
            return depth_to_space(out, p) if p > 1 else out

        w = model.decoder.conv_out.weight
        g_rec = distributed.mean(mx.grad(lambda w: self._rec_loss(head(w), x)[0])(w), self.group)
        g_gan = distributed.mean(mx.grad(lambda w: -mx.mean(disc(head(w))))(w), self.group)
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
        model, disc, opt_g, opt_d, group = self.model, self.disc, self.opt_g, self.opt_d, self.group
        state = [model.state, disc.state, opt_g.state, opt_d.state, mx.random.state]
        gen_grad = nn.value_and_grad(model, self._gen_loss)

        @partial(mx.compile, inputs=state, outputs=state)
        def ae_step(x: mx.array):
            (total, aux), grads = gen_grad(model, x, None)
            opt_g.update(model, nn.average_gradients(grads, group))
            l1, l2, vq, _, indices, z, _ = aux
            return distributed.mean(mx.stack([total, l1, l2, vq]), group), indices, z

        def d_loss_fn(disc: PatchDiscriminator, real: mx.array, fake: mx.array) -> mx.array:
            return mx.mean(nn.relu(1.0 - disc(real))) + mx.mean(nn.relu(1.0 + disc(fake)))

        d_grad = nn.value_and_grad(disc, d_loss_fn)

        @partial(mx.compile, inputs=state, outputs=state)
        def gan_step(x: mx.array):
            weight = self._adaptive_weight(x)
            (total, aux), grads = gen_grad(model, x, weight)
            opt_g.update(model, nn.average_gradients(grads, group))
            l1, l2, vq, g_loss, indices, z, recon = aux
            d_loss, d_grads = d_grad(disc, x, mx.stop_gradient(recon))
            opt_d.update(disc, nn.average_gradients(d_grads, group))
            losses = mx.stack([total, l1, l2, vq, g_loss, d_loss, weight])
            return distributed.mean(losses, group), indices, z

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
        z = distributed.gather(z, self.group)  # every rank's, in batch order
        n = self.model.quantizer.restart_codes(dead, np.array(z).reshape(-1, z.shape[-1]), rng)
        state = self.opt_g.state.get("quantizer", {}).get("codebook")
        if state:
            keep = mx.array(~dead[:, None])
            self.opt_g.state["quantizer"]["codebook"] = {k: v * keep for k, v in state.items()}
        mx.eval(self.model.parameters(), self.opt_g.state)
        self.restarts += n
        return n

    # ---- the loop's hooks --------------------------------------------------------------
    def batch(self) -> np.ndarray:
        if self._batches is None:  # batch k is a function of (seed, k): resumes replay it
            self._batches = batch_iterator(
                self.data,
                self.tc.batch_size,
                seed=self.seed,
                start_batch=self.step,
                load=common.load_uint8,
                part=self.shard.part(self.tc.batch_size),
            )
        return next(self._batches)

    def update(self, images: np.ndarray) -> dict[str, float]:
        """A step on random crops of the images; counts code usage, restarts dead codes."""
        rng = np.random.default_rng([self.seed, 0, self.step])
        crops = random_crops(images, self.tc.crop_size, self.cfg.vqgan.pad_rows, rng, self.shard)
        values, indices, z = self.train_step(mx.array(to_float(crops)))
        counts = np.bincount(indices.reshape(-1), minlength=len(self.counts))
        self.counts += np.array(distributed.total(mx.array(counts.astype(np.int32)), self.group))
        self.maybe_restart_codes(z)
        return values

    def status(self) -> dict[str, str]:
        return {"use": f"{self.window_usage[0]:.2f}"}

    def after_step(self) -> None:
        if self.step % self.tc.sample_every == 0:
            path = self.out_dir / "samples" / f"step_{self.step:06d}.png"
            common.save_reconstructions(path, self.model, self.eval_images)

    def evaluate(self) -> dict[str, Any]:
        usage, ppl = self.window_usage
        return {
            **evaluate_vqgan(self.model, self.eval_images),
            "train_usage": usage,
            "train_perplexity": ppl,
            "split": self.eval_split,
        }

    def close(self) -> None:
        if self._batches is not None:
            self._batches.close()
        if self.data is not None and self.data.problems:
            log.warning("training data: %s", self.data.summary())


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
    cfg, seed = common.run_config(ckpt, cfg, seed, resume=resume, max_minutes=max_minutes)
    if steps is not None:
        cfg.train_vqgan.steps = steps
    tc = cfg.train_vqgan

    common.prepare_out_dir(out_dir)
    dataset = ImageDataset(data_dir)
    eval_set = ImageDataset(eval_dir) if eval_dir else dataset
    if not eval_dir:
        log.warning("no --eval-data: evaluating on training images")
    eval_images = common.readable_images(eval_set, tc.eval_images)
    split = "eval" if eval_dir else "train"
    trainer = VQGANTrainer(cfg, out_dir, seed, dataset, eval_images, split)
    trainer.start(resume, max_minutes)
    if trainer.step == 0:
        first = next(batch_iterator(dataset, tc.batch_size, seed=seed + 1, load=common.load_uint8))
        trainer.init_codebook(first)
    return loop.run(trainer, tc, progress_bar=progress_bar, stop_after=stop_after)
