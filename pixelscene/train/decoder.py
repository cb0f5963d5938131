"""Fine-tune a trained VQGAN's decoder on whole images, with the encoder and codebook frozen.

The VQGAN trains on small random crops (64x64 pixels: a 4x4 grid of codes, most of them at a
zero-padded crop edge) because the encoder's backward pass is the expensive part. The
decoder only ever runs on whole 13x20 grids, though. Here it trains on exactly that: the
dataset's token cache (the codes of whole images, made once by the frozen encoder) in, the
whole 320x200 images out. No encoder runs during training, so an image costs a fifth of a
crop-trained one per pixel, and every pixel has its real neighbours.

Because the encoder and the codebook are unchanged, every code grid means what it meant
before: a transformer trained on the old model's codes works with the new decoder as it is,
and token caches stay valid (their fingerprint covers only the encoder and the codebook).

Resuming is exact as in the VQGAN trainer: batch k is a function of (seed, k), and the
checkpoint holds the decoder, its optimizer state, the step and the settings.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from pixelscene import model_io
from pixelscene.data.datasets import CaptionDataset, epoch_order, read_image, to_float, to_uint8
from pixelscene.data.token_cache import ensure_token_cache
from pixelscene.errors import DataError, PixelsceneError
from pixelscene.eval.vqgan_metrics import evaluate_vqgan
from pixelscene.train import common
from pixelscene.train.vqgan import TrainResult, _append_jsonl, save_grid
from pixelscene.vqgan import VQGAN, PatchDiscriminator, load_vqgan
from pixelscene.vqgan.layers import depth_to_space

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"


@dataclass
class DecoderTuneSettings:
    """Everything besides the data that decides a fine-tuning run (stored in its checkpoint)."""

    steps: int = 4000
    batch_size: int = 2
    learning_rate: float = 2e-4
    warmup_steps: int = 50
    l1_weight: float = 0.0
    l2_weight: float = 1.0  # PSNR is a function of the squared error alone
    gan_weight: float = 0.0  # > 0: hinge GAN, weighted adaptively as in the VQGAN trainer
    disc_start: int = 100  # steps of reconstruction loss alone before the GAN term
    disc_learning_rate: float = 2e-4
    seed: int = 0
    eval_every: int = 250
    eval_images: int = 32
    checkpoint_every: int = 100
    log_every: int = 10

    def validate(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_images", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise PixelsceneError(f"{name.replace('_', '-')} must be positive")
        if self.learning_rate <= 0:
            raise PixelsceneError("learning rate must be positive")
        if self.l1_weight < 0 or self.l2_weight < 0 or self.l1_weight + self.l2_weight == 0:
            raise PixelsceneError("loss weights must be >= 0 and not both 0")
        if self.gan_weight < 0 or self.disc_start < 0:
            raise PixelsceneError("gan-weight and disc-start must be >= 0")


class CodeImageData:
    """(codes, image) pairs of a dataset: codes from its token cache, images read on demand."""

    def __init__(self, model_dir: str | Path, data_dir: str | Path):
        self.dataset = CaptionDataset(data_dir)
        cache = ensure_token_cache(model_dir, data_dir)
        index = cache.index()
        self.names = [n for n in self.dataset.images() if n in index]
        if not self.names:
            raise DataError(f"{data_dir}: no captioned images to train on")
        self.codes = np.stack([cache.codes[index[n]] for n in self.names]).astype(np.int32)

    def __len__(self) -> int:
        return len(self.names)

    def batch(self, k: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch k of the shuffled stream: (codes (B, 13, 20), uint8 images (B, 200, 320, 3))."""
        per_epoch = len(self) // batch_size
        if per_epoch == 0:
            raise DataError(f"dataset has {len(self)} images, fewer than batch size {batch_size}")
        order = epoch_order(len(self), seed, k // per_epoch)
        idx = order[(k % per_epoch) * batch_size : (k % per_epoch + 1) * batch_size]
        images = [
            read_image(self.dataset.image_dir / self.names[i], self.dataset.image_size) for i in idx
        ]
        return self.codes[idx], np.stack(images)


class DecoderTuner:
    """The frozen VQGAN, its trainable decoder, the optimizer and the compiled step."""

    def __init__(self, model: VQGAN, settings: DecoderTuneSettings, weights_file: Path):
        self.model = model
        self.settings = settings
        # The source file's tensors, written back unchanged (same bytes, same dtype) except
        # the decoder's, so the codes cannot drift by a rounding.
        self.stored = mx.load(str(weights_file))
        self.step = 0
        self.elapsed = 0.0  # seconds in training steps
        self.wall_s = 0.0  # wall time of earlier sessions of this run, evaluations included
        self.budget = common.TimeBudget()  # this session's, counting on from wall_s
        self.model.freeze()
        self.model.decoder.unfreeze()
        self.opt = optim.Adam(
            learning_rate=common.warmup_cosine(
                settings.learning_rate, settings.warmup_steps, settings.steps
            ),
            betas=[0.9, 0.99],
        )
        self.opt.init(self.model.decoder.trainable_parameters())
        self.modules: dict[str, nn.Module] = {"decoder": self.model.decoder}
        self.optimizers: dict[str, optim.Optimizer] = {"decoder": self.opt}
        if settings.gan_weight > 0:
            mx.random.seed(settings.seed)  # the discriminator's initial weights
            vc = model.cfg
            self.disc = PatchDiscriminator(vc.in_channels, vc.disc_channels, vc.disc_layers)
            self.opt_d = optim.Adam(learning_rate=settings.disc_learning_rate, betas=[0.5, 0.9])
            self.opt_d.init(self.disc.trainable_parameters())
            self.modules["discriminator"] = self.disc
            self.optimizers["discriminator"] = self.opt_d
        self._steps: dict[str, Any] = {}

    def loss(
        self, decoder: nn.Module, codes: mx.array, x: mx.array, gan_weight: mx.array | None
    ) -> tuple[mx.array, Any]:
        """Weighted L1 + L2 between the decoded (unclipped, cropped) grid and the image, plus
        the generator's hinge loss when gan_weight is given."""
        z_q = mx.stop_gradient(self.model.quantizer.decode(codes))
        recon = self.model.crop(decoder(z_q))
        l1 = mx.mean(mx.abs(recon - x))
        l2 = mx.mean(mx.square(recon - x))
        s = self.settings
        total = s.l1_weight * l1 + s.l2_weight * l2
        g_loss = mx.array(0.0)
        if gan_weight is not None:
            g_loss = -mx.mean(self.disc(recon))
            total = total + gan_weight * g_loss
        return total, (l1, l2, g_loss, recon)

    def _adaptive_weight(self, codes: mx.array, x: mx.array) -> mx.array:
        """gan_weight * |grad rec| / |grad gan| at the decoder's last convolution (detached)."""
        decoder, s = self.model.decoder, self.settings
        h = mx.stop_gradient(decoder.features(self.model.quantizer.decode(codes)))
        bias = decoder.conv_out.bias

        def head(w: mx.array) -> mx.array:
            out = mx.conv2d(h, w, padding=1) + bias
            p = decoder.patch_size
            return self.model.crop(depth_to_space(out, p) if p > 1 else out)

        def rec(w: mx.array) -> mx.array:
            r = head(w)
            return s.l1_weight * mx.mean(mx.abs(r - x)) + s.l2_weight * mx.mean(mx.square(r - x))

        w = decoder.conv_out.weight
        g_rec = mx.grad(rec)(w)
        g_gan = mx.grad(lambda w: -mx.mean(self.disc(head(w))))(w)
        ratio = mx.linalg.norm(g_rec.reshape(-1)) / (mx.linalg.norm(g_gan.reshape(-1)) + 1e-4)
        return mx.stop_gradient(mx.clip(ratio, 0.0, 1e4) * s.gan_weight)

    def _build(self) -> None:
        decoder, opt = self.model.decoder, self.opt
        grad_fn = nn.value_and_grad(decoder, self.loss)
        state = [decoder.state, opt.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def rec_step(codes: mx.array, x: mx.array) -> mx.array:
            (total, (l1, l2, _, _)), grads = grad_fn(decoder, codes, x, None)
            opt.update(decoder, grads)
            return mx.stack([total, l1, l2])

        self._steps = {"rec": rec_step}
        if self.settings.gan_weight <= 0:
            return
        disc, opt_d = self.disc, self.opt_d
        state = [decoder.state, opt.state, disc.state, opt_d.state]

        def d_loss_fn(disc: nn.Module, real: mx.array, fake: mx.array) -> mx.array:
            return mx.mean(nn.relu(1.0 - disc(real))) + mx.mean(nn.relu(1.0 + disc(fake)))

        d_grad = nn.value_and_grad(disc, d_loss_fn)

        @partial(mx.compile, inputs=state, outputs=state)
        def gan_step(codes: mx.array, x: mx.array) -> mx.array:
            weight = self._adaptive_weight(codes, x)
            (total, (l1, l2, g_loss, recon)), grads = grad_fn(decoder, codes, x, weight)
            opt.update(decoder, grads)
            d_loss, d_grads = d_grad(disc, x, mx.stop_gradient(recon))
            opt_d.update(disc, d_grads)
            return mx.stack([total, l1, l2, g_loss, d_loss, weight])

        self._steps["gan"] = gan_step

    def train_step(self, codes: np.ndarray, images: np.ndarray) -> dict[str, float]:
        if not self._steps:
            self._build()
        s = self.settings
        kind = "gan" if s.gan_weight > 0 and self.step >= s.disc_start else "rec"
        losses = self._steps[kind](mx.array(codes), mx.array(to_float(images)))
        mx.eval(losses)
        self.step += 1
        names = ["loss", "l1", "l2", "g", "d", "gan_w"]
        return dict(zip(names, np.array(losses).tolist(), strict=False))

    def save(self, out_dir: Path) -> None:
        meta = {
            "step": self.step,
            "elapsed_s": self.elapsed,
            "wall_s": self.budget.spent_s,
            "settings": asdict(self.settings),
        }
        common.save_checkpoint(
            out_dir / CHECKPOINT, modules=self.modules, optimizers=self.optimizers, meta=meta
        )
        self.export(out_dir / "vqgan.safetensors")

    def export(self, path: Path) -> None:
        """The source weights with the decoder's replaced, each in its stored dtype."""
        weights = dict(self.stored)
        for name, value in tree_flatten(self.model.decoder.parameters()):
            key = f"decoder.{name}"
            weights[key] = value.astype(self.stored[key].dtype)
        tmp = path.with_name(f".{path.name}.tmp.safetensors")
        mx.save_safetensors(str(tmp), weights)
        os.replace(tmp, path)

    def load(self, out_dir: Path) -> None:
        meta, _ = common.load_checkpoint(
            out_dir / CHECKPOINT, modules=self.modules, optimizers=self.optimizers
        )
        self.step = int(meta["step"])
        self.elapsed = float(meta.get("elapsed_s", 0.0))
        self.wall_s = float(meta.get("wall_s", self.elapsed))
        self._steps = {}  # optimizer states were replaced: recompile


def _copy_model_folder(src: Path, dst: Path) -> None:
    """Start the output folder as a copy of the source model (all parts, card excluded)."""
    common.prepare_out_dir(dst)
    for item in src.iterdir():
        if item.is_file() and item.name != "MODEL_CARD.md":
            shutil.copy2(item, dst / item.name)


def finetune_decoder(
    model_dir: str | Path | None,
    data_dir: str | Path,
    out_dir: str | Path,
    settings: DecoderTuneSettings | None = None,
    *,
    resume: bool = False,
    steps: int | None = None,
    eval_dir: str | Path | None = None,
    progress_bar: bool | None = None,
    stop_after: int | None = None,
    max_minutes: float | None = None,
) -> TrainResult:
    """Fine-tune the decoder of the VQGAN in model_dir (None: the bundled model) into out_dir.

    out_dir becomes a complete model folder (a copy of model_dir whose vqgan.safetensors has
    the new decoder); OUT/checkpoint lets `resume=True` continue exactly, and `steps` may
    extend a resumed run. SIGINT/SIGTERM or `stop_after` save a checkpoint and return with
    `interrupted=True`; `max_minutes` of wall time over the whole run (resumes included) ends
    it early, evaluated and exported (`budget_reached`).
    """
    out_dir = Path(out_dir)
    common.TimeBudget.check(max_minutes)  # before any work
    ckpt = out_dir / CHECKPOINT
    if resume:
        meta = common.read_checkpoint_meta(ckpt)
        settings = DecoderTuneSettings(**meta["settings"])
        source = out_dir
    else:
        if (ckpt / "meta.json").exists():
            raise PixelsceneError(f"{ckpt} exists: pass --resume to continue it, or another --out")
        settings = settings or DecoderTuneSettings()
        source = model_io.resolve_model_dir(model_dir)
        if source.resolve() == out_dir.resolve():
            raise PixelsceneError("--out must be a new folder, not the model being fine-tuned")
    if steps is not None:
        settings.steps = steps
    settings.validate()

    model = load_vqgan(source)
    model.set_dtype(mx.float32)
    data = CodeImageData(source, data_dir)
    if not resume:
        _copy_model_folder(source, out_dir)
    tuner = DecoderTuner(model, settings, source / "vqgan.safetensors")
    if resume:
        tuner.load(out_dir)
    tuner.budget = common.TimeBudget(max_minutes, tuner.wall_s)

    eval_set = CaptionDataset(eval_dir) if eval_dir else data.dataset
    if not eval_dir:
        log.warning("no --eval-data: evaluating on training images")
    eval_names = eval_set.images()[: settings.eval_images]
    eval_images = [read_image(eval_set.image_dir / n, eval_set.image_size) for n in eval_names]

    def evaluate() -> dict[str, Any]:
        row = {
            "step": tuner.step,
            **evaluate_vqgan(model, eval_images),
            "elapsed_s": round(tuner.elapsed, 1),
            "split": "eval" if eval_dir else "train",
        }
        _append_jsonl(out_dir / "eval.jsonl", row)
        log.info("step %d eval: %s", tuner.step, json.dumps(row))
        return row

    def sample() -> None:
        originals = np.stack(eval_images[:4])
        recon = model.reconstruct(mx.array(to_float(originals)))
        save_grid(
            out_dir / "samples" / f"decoder_{tuner.step:06d}.png",
            originals,
            to_uint8(np.array(recon)),
        )

    if tuner.step == 0:
        evaluate()  # the starting point, for comparison
    throughput = common.Throughput()
    bar = common.progress(
        settings.steps, initial=tuner.step, desc="decoder", disable=progress_bar is False
    )
    last_eval: dict[str, Any] | None = None
    step_times: list[float] = []
    interrupted = budget_reached = False
    try:
        with common.stop_on_signals() as stop:
            while tuner.step < settings.steps:
                if tuner.budget.reached():
                    budget_reached = True
                    break
                codes, images = data.batch(tuner.step, settings.batch_size, settings.seed)
                t0 = time.perf_counter()
                values = tuner.train_step(codes, images)
                dt = time.perf_counter() - t0
                tuner.elapsed += dt
                step_times.append(dt)
                rate = throughput.add(settings.batch_size)
                bar.update(1)
                if tuner.step % settings.log_every == 0 or tuner.step == 1:
                    bar.set_postfix({**common.format_losses(values), "img/s": f"{rate:.1f}"})
                    _append_jsonl(
                        out_dir / "train.jsonl", {"step": tuner.step, **values, "img_per_s": rate}
                    )
                if tuner.step % settings.eval_every == 0:
                    last_eval = evaluate()
                    sample()
                if tuner.step % settings.checkpoint_every == 0:
                    tuner.save(out_dir)
                if stop or tuner.step == stop_after:
                    interrupted = True
                    break
            if not interrupted and (last_eval is None or last_eval["step"] != tuner.step):
                last_eval = evaluate()
                sample()
            tuner.save(out_dir)
    finally:
        bar.close()
    sec = float(np.median(step_times)) if step_times else float("nan")
    return TrainResult(tuner.step, interrupted, sec, last_eval, budget_reached)
