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
checkpoint holds the decoder, its optimizer state, the step and the settings. Under
`mlx.launch` each rank reads and trains on its part of every batch (`train.distributed`).
"""

from __future__ import annotations

import logging
import os
import shutil
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
from pixelscene.data.datasets import CaptionDataset, epoch_order, read_image, to_float
from pixelscene.data.token_cache import ensure_token_cache
from pixelscene.errors import DataError, PixelsceneError
from pixelscene.eval.vqgan_metrics import evaluate_vqgan
from pixelscene.train import common, distributed, loop
from pixelscene.train.distributed import WHOLE, Shard
from pixelscene.train.loop import TrainResult
from pixelscene.vqgan import VQGAN, PatchDiscriminator, load_vqgan
from pixelscene.vqgan.layers import depth_to_space

log = logging.getLogger(__name__)

CHECKPOINT = loop.CHECKPOINT


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

    def batch(
        self, k: int, batch_size: int, seed: int, shard: Shard = WHOLE
    ) -> tuple[np.ndarray, np.ndarray]:
        """The shard's part of batch k of the shuffled stream: (codes (B, 13, 20), uint8
        images (B, 200, 320, 3)); only its images are read."""
        per_epoch = len(self) // batch_size
        if per_epoch == 0:
            raise DataError(f"dataset has {len(self)} images, fewer than batch size {batch_size}")
        order = epoch_order(len(self), seed, k // per_epoch)
        idx = order[(k % per_epoch) * batch_size : (k % per_epoch + 1) * batch_size]
        idx = idx[shard.part(batch_size)]
        images = [
            read_image(self.dataset.image_dir / self.names[i], self.dataset.image_size) for i in idx
        ]
        return self.codes[idx], np.stack(images)


class DecoderTuner(loop.Trainer):
    """The frozen VQGAN, its trainable decoder, the optimizer and the compiled step."""

    desc = "decoder"
    eval_at_start = True  # the starting point, for comparison
    data_parallel = True

    def __init__(
        self,
        model: VQGAN,
        settings: DecoderTuneSettings,
        weights_file: Path,
        out_dir: str | Path,
        data: CodeImageData,
        eval_images: list[np.ndarray],
        eval_split: str = "eval",
    ):
        super().__init__(out_dir, settings.seed)
        self.model = model
        self.settings = settings
        self.items_per_step = settings.batch_size  # over all ranks
        self.shard.part(settings.batch_size)  # fails early if the batch does not split
        # The source file's tensors, written back unchanged (same bytes, same dtype) except
        # the decoder's, so the codes cannot drift by a rounding.
        self.stored = mx.load(str(weights_file))
        self.data = data
        self.eval_images = eval_images
        self.eval_split = eval_split
        self.model.freeze()
        self.model.decoder.unfreeze()
        self.opt = optim.Adam(
            learning_rate=common.warmup_cosine(
                settings.learning_rate, settings.warmup_steps, settings.steps
            ),
            betas=[0.9, 0.99],
        )
        self.opt.init(self.model.decoder.trainable_parameters())
        self.modules = {"decoder": self.model.decoder}
        self.optimizers = {"decoder": self.opt}
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
        """gan_weight * |grad rec| / |grad gan| at the decoder's last convolution (detached),
        of the gradients averaged over the ranks."""
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
        g_rec = distributed.mean(mx.grad(rec)(w), self.group)
        g_gan = distributed.mean(mx.grad(lambda w: -mx.mean(self.disc(head(w))))(w), self.group)
        ratio = mx.linalg.norm(g_rec.reshape(-1)) / (mx.linalg.norm(g_gan.reshape(-1)) + 1e-4)
        return mx.stop_gradient(mx.clip(ratio, 0.0, 1e4) * s.gan_weight)

    def _build(self) -> None:
        decoder, opt, group = self.model.decoder, self.opt, self.group
        grad_fn = nn.value_and_grad(decoder, self.loss)
        state = [decoder.state, opt.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def rec_step(codes: mx.array, x: mx.array) -> mx.array:
            (total, (l1, l2, _, _)), grads = grad_fn(decoder, codes, x, None)
            opt.update(decoder, nn.average_gradients(grads, group))
            return distributed.mean(mx.stack([total, l1, l2]), group)

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
            opt.update(decoder, nn.average_gradients(grads, group))
            d_loss, d_grads = d_grad(disc, x, mx.stop_gradient(recon))
            opt_d.update(disc, nn.average_gradients(d_grads, group))
            return distributed.mean(mx.stack([total, l1, l2, g_loss, d_loss, weight]), group)

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

    # ---- the loop's hooks --------------------------------------------------------------
    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.batch(self.step, self.settings.batch_size, self.settings.seed, self.shard)

    def update(self, batch: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        return self.train_step(*batch)

    def evaluate(self) -> dict[str, Any]:
        row = {**evaluate_vqgan(self.model, self.eval_images), "split": self.eval_split}
        if self.step > 0:
            path = self.out_dir / "samples" / f"decoder_{self.step:06d}.png"
            common.save_reconstructions(path, self.model, self.eval_images)
        return row

    def state(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings)}

    def restore(self, meta: dict[str, Any], arrays: dict[str, mx.array]) -> None:
        self._steps = {}  # optimizer states were replaced: recompile

    def export(self) -> None:
        """The source weights with the decoder's replaced, each in its stored dtype."""
        path = self.out_dir / "vqgan.safetensors"
        weights = dict(self.stored)
        for name, value in tree_flatten(self.model.decoder.parameters()):
            key = f"decoder.{name}"
            weights[key] = value.astype(self.stored[key].dtype)
        tmp = path.with_name(f".{path.name}.tmp.safetensors")
        mx.save_safetensors(str(tmp), weights)
        os.replace(tmp, path)


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
    meta = common.resume_meta(out_dir / CHECKPOINT, resume)
    if meta is not None:
        settings = DecoderTuneSettings(**meta["settings"])
        source = out_dir
    else:
        settings = settings or DecoderTuneSettings()
        source = model_io.resolve_model_dir(model_dir)
        if source.resolve() == out_dir.resolve():
            raise PixelsceneError("--out must be a new folder, not the model being fine-tuned")
    if steps is not None:
        settings.steps = steps
    settings.validate()

    model = load_vqgan(source)
    model.set_dtype(mx.float32)
    group = distributed.init()
    with distributed.main_first(group):  # rank 0 builds the token cache the others read
        data = CodeImageData(source, data_dir)
    if not resume and group.rank() == 0:
        _copy_model_folder(source, out_dir)
    eval_set = CaptionDataset(eval_dir) if eval_dir else data.dataset
    if not eval_dir:
        log.warning("no --eval-data: evaluating on training images")
    eval_names = eval_set.images()[: settings.eval_images]
    eval_images = [read_image(eval_set.image_dir / n, eval_set.image_size) for n in eval_names]
    split = "eval" if eval_dir else "train"
    tuner = DecoderTuner(
        model, settings, source / "vqgan.safetensors", out_dir, data, eval_images, split
    )
    tuner.start(resume, max_minutes)
    return loop.run(tuner, settings, progress_bar=progress_bar, stop_after=stop_after)
