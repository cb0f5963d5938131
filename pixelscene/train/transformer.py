"""Train the text-conditioned transformer on a token cache of an image tokenizer's codes
(the VQGAN's grids or the categorical tokenizer's token rows: `Config.token_layout`).

A trainer of the common shape (`train.loop`): AdamW on the shared warm-up + cosine schedule,
a compiled step whose state is the model, optimizer and random state, held-out loss every
`eval_every` steps in OUT/eval_transformer.jsonl with a grid of samples in OUT/samples/,
checkpoints in OUT/checkpoint_transformer/ (the common format; the caption vocabulary rides
in its meta.json), and exact resume: the data of every step and its random key are
functions of (seed, step).

Output is a model folder (the tokenizer's own, or a new one that gets a copy of its weights;
the names say "transformer" beside the tokenizer's own checkpoint and logs):
transformer.safetensors (float16), tokenizer.json, and the transformer sections of
config.json. With held-out data the model written is the one with
the best held-out loss so far.
"""

from __future__ import annotations

import logging
import math
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from pixelscene.config import Config, TokenLayout, load_config
from pixelscene.data.captioned_codes import CaptionedCodes, batch_rows, captioned_codes
from pixelscene.data.datasets import CaptionDataset
from pixelscene.data.token_cache import ensure_token_cache
from pixelscene.errors import DataError, PixelsceneError
from pixelscene.image_tokenizers import weights_file
from pixelscene.model_io import load_model_config, load_weights, save_model_config, save_weights
from pixelscene.train import common, distributed, loop, samples
from pixelscene.train.loop import TrainResult
from pixelscene.transformer.model import ImageTransformer, build_transformer
from pixelscene.transformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoint_transformer"
TRAIN_LOG = "train_transformer.jsonl"
EVAL_LOG = "eval_transformer.jsonl"


def position_weights(seq_len: int, row_len: int, first_row_weight: float) -> mx.array:
    """(seq_len,) loss weights with mean 1: the first `row_len` codes weigh
    `first_row_weight` times the others."""
    w = mx.where(mx.arange(seq_len) < row_len, first_row_weight, 1.0)
    return w * (seq_len / w.sum())


def layout_weights(layout: TokenLayout, first_row_weight: float) -> np.ndarray:
    """(length,) loss weights with mean 1 for a token layout: the grid's first row weighs
    `first_row_weight` times the other codes; tokens before the grid (a palette) weigh as
    the grid's other codes."""
    rows, cols = layout.grid
    if not layout.grid_start:
        return np.array(position_weights(rows * cols, cols, first_row_weight))
    w = np.ones(layout.length, np.float32)
    w[layout.grid_start : layout.grid_start + cols] = first_row_weight
    return (w * (len(w) / w.sum())).astype(np.float32)


def sprite_weights(position: np.ndarray, coverage: np.ndarray, sprite_weight: float) -> np.ndarray:
    """(B, S) loss weights with mean 1: each code's position weight times 1 + sprite_weight x
    the fraction of its cell that sprites cover (coverage (B, S))."""
    w = position[None, :] * (1.0 + sprite_weight * coverage)
    return (w / w.mean()).astype(np.float32)


def noisy_states(states: mx.array, scale: float, noise: mx.array | None = None) -> mx.array:
    """States plus Gaussian noise (`noise`, or drawn here) of `scale` times each state's RMS
    (training only)."""
    states = states.astype(mx.float32)
    rms = mx.sqrt(mx.mean(states * states, axis=-1, keepdims=True) + 1e-6)
    noise = mx.random.normal(states.shape) if noise is None else noise
    return states + scale * rms * noise


def shard_normal(shape: tuple[int, ...], shard: distributed.Shard) -> mx.array:
    """Gaussian noise for this rank's rows of a global batch of `shape` (rows first): every
    rank draws the whole batch's and keeps its rows, so N ranks draw what one process does
    (drawing only its own rows, every rank would repeat rank 0's noise)."""
    return mx.random.normal(shape)[shard.part(shape[0])]


def sequence_loss(
    model: ImageTransformer, codes, ids, mask, drop=None, weights=None, text_noise=0.0, noise=None
) -> mx.array:
    """Mean next-code cross-entropy; rows where `drop` is True see the null caption.

    `ids` are token ids for the learned encoder, or a frozen encoder's precomputed states.
    `weights` (S,) or (B, S) with mean 1 weighs the codes (see `position_weights`,
    `sprite_weights`); `text_noise` perturbs a frozen encoder's states (see `noisy_states`;
    `noise` (B, L, D) is the Gaussian noise to use, else drawn).
    """
    if "text_encoder" in model:
        states, mask = model.encode_text(ids, mask)
    else:
        states, mask = ids, mask.astype(mx.bool_)
        if text_noise > 0:
            states = noisy_states(states, text_noise, noise)
    if drop is not None:
        mask = mask & ~drop[:, None]
    nll = model.nll(codes, states, mask)
    return nll.mean() if weights is None else (nll * weights).mean()


def held_out_loss(
    model: ImageTransformer, data: CaptionedCodes, batch_size: int = 64, limit: int = 256
) -> float:
    """Held-out loss with each image's first caption, dropout off."""
    model.eval()
    n = min(len(data), limit)
    total = 0.0
    for s in range(0, n, batch_size):
        idx = np.arange(s, min(s + batch_size, n))
        rows = data.start[idx]
        loss = sequence_loss(
            model, mx.array(data.codes[idx]), mx.array(data.ids[rows]), mx.array(data.mask[rows])
        )
        total += loss.item() * len(idx)
    model.train()
    return total / max(n, 1)


class TransformerTrainer(loop.Trainer):
    """The transformer, its optimizer and compiled step, the caption vocabulary and data."""

    desc = "transformer"
    unit = "tokens"
    data_parallel = True
    checkpoint = CHECKPOINT_DIR
    train_log = TRAIN_LOG
    eval_log = EVAL_LOG

    def __init__(
        self,
        cfg: Config,
        out_dir: str | Path,
        seed: int,
        tok: Tokenizer,
        train: CaptionedCodes,
        held: CaptionedCodes | None = None,
        init_from: str | Path | None = None,
    ):
        super().__init__(out_dir, seed)
        self.cfg = cfg
        self.tc = tc = cfg.train_transformer
        self.tok = tok
        self.train = train
        self.held = held
        mx.random.seed(seed)
        self.model = build_transformer(cfg)  # the layout matches the token cache (checked)
        if init_from is not None:
            load_weights(Path(init_from) / "transformer.safetensors", self.model)
            log.info("starting from the weights in %s", init_from)
        schedule = common.warmup_cosine(
            tc.learning_rate, tc.warmup_steps, tc.steps, final_frac=0.05, start_lr=0.0
        )
        self.opt = optim.AdamW(schedule, weight_decay=tc.weight_decay)
        self.opt.init(self.model.trainable_parameters())
        self.modules = {"transformer": self.model}
        self.optimizers = {"transformer": self.opt}
        layout = cfg.token_layout()
        self.items_per_step = tc.batch_size * layout.length  # tokens
        self.position = layout_weights(layout, tc.first_row_weight)
        self.best = math.inf  # the best held-out loss so far (its model is the one written)
        self.ema: float | None = None  # the training loss, smoothed
        self._step_fn = None
        self._state: list = []
        self._image_tokenizer = None  # for the sample grids, loaded at the first evaluation

    def _build(self) -> None:
        model, optimizer, tc, group, shard = self.model, self.opt, self.tc, self.group, self.shard
        p_drop = self.cfg.transformer.cfg_dropout
        text_noise, clip = tc.text_noise, tc.grad_clip
        self._state = state = [model.state, optimizer.state, mx.random.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step_fn(codes, ids, mask, weights):
            # every rank draws the whole batch's caption dropout and keeps its rows'
            rows = codes.shape[0] * shard.size
            drop = mx.random.uniform(shape=(rows,))[shard.part(rows)] < p_drop
            noise = None
            if text_noise > 0 and "text_encoder" not in model:  # ids are the frozen states
                noise = shard_normal((rows, *ids.shape[1:]), shard)
            loss_and_grad = nn.value_and_grad(model, sequence_loss)
            loss, grads = loss_and_grad(model, codes, ids, mask, drop, weights, text_noise, noise)
            grads = nn.average_gradients(grads, group)
            if clip > 0:
                grads, _ = optim.clip_grad_norm(grads, clip)
            optimizer.update(model, grads)
            return distributed.mean(loss, group)

        self._step_fn = step_fn

    # ---- the loop's hooks --------------------------------------------------------------
    def batch(self) -> tuple[np.ndarray, ...]:
        """This rank's rows of step k's batch (of all ranks' rows, weighed as a whole)."""
        idx, rows = batch_rows(self.train, self.tc.batch_size, self.seed, self.step)
        mine = self.shard.part(len(idx))
        weights = self.position
        if self.train.sprites is not None:
            weights = sprite_weights(self.position, self.train.sprites[idx], self.tc.sprite_weight)
            weights = weights[mine]
        idx, rows = idx[mine], rows[mine]
        return self.train.codes[idx], self.train.ids[rows], self.train.mask[rows], weights

    def update(self, batch: tuple[np.ndarray, ...]) -> dict[str, float]:
        if self._step_fn is None:
            self._build()
        mx.random.seed(self.seed * 1_000_003 + self.step)
        loss = self._step_fn(*(mx.array(b) for b in batch))
        mx.eval(loss, self._state)
        self.step += 1
        value = loss.item()
        self.ema = value if self.ema is None else 0.98 * self.ema + 0.02 * value
        return {"loss": value, "loss_ema": self.ema}

    def evaluate(self) -> dict[str, Any] | None:
        if self.held is None:
            return None
        eval_loss = held_out_loss(self.model, self.held)
        row = {
            "train_loss": None if self.ema is None else round(self.ema, 5),
            "eval_loss": round(eval_loss, 5),
            "lr": float(self.opt.learning_rate.item()),
        }
        if eval_loss < self.best:
            self.best = eval_loss
            _write_model(self.out_dir, self.model, self.tok)
        self._samples()
        return row

    def _samples(self) -> None:
        """samples/transformer_<step>.png: held-out codes over generated ones (`samples`)."""
        if self._image_tokenizer is None:
            self._image_tokenizer = samples.image_tokenizer(self.out_dir) or False
        if self._image_tokenizer:
            path = self.out_dir / "samples" / f"transformer_{self.step:06d}.png"
            samples.transformer_grid(path, self.model, self.cfg, self.held, self._image_tokenizer)

    def export(self) -> None:
        """Without held-out data the model as it is; with it, the best one (`evaluate`)."""
        if self.held is None or not (self.out_dir / "transformer.safetensors").exists():
            _write_model(self.out_dir, self.model, self.tok)

    def state(self) -> dict[str, Any]:
        return {
            "best_eval": self.best,
            "train_loss": self.ema,
            "caption_tokenizer": self.tok.to_dict(),
            "config": self.cfg.to_dict(),
        }

    def restore(self, meta: dict[str, Any], arrays: dict[str, mx.array]) -> None:
        self.best = meta.get("best_eval", math.inf)
        self.ema = meta.get("train_loss")
        self.opt.init(self.model.trainable_parameters())  # marks it initialized; keeps state
        self._step_fn = None  # optimizer states were replaced: recompile


def _write_model(out: Path, model, tok: Tokenizer) -> None:
    """Float16 weights, and the caption vocabulary where the model has a learned encoder."""
    save_weights(out / "transformer.safetensors", model, dtype=mx.float16)
    if "text_encoder" in model:
        tok.save(out / "tokenizer.json")
    else:  # a frozen encoder brings its own tokenizer; an old vocabulary would mislead
        (out / "tokenizer.json").unlink(missing_ok=True)


def _output_config(preset: Config, vqgan_dir: Path, out: Path) -> Config:
    """The model folder's config: its VQGAN section, this preset's transformer sections."""
    base = load_model_config(out if (out / "config.json").is_file() else vqgan_dir)
    base.name = preset.name
    base.transformer = preset.transformer
    base.train_transformer = preset.train_transformer
    base.sampling = preset.sampling
    return base.validate()


def _warn_if_heldout(data_dir: str | Path) -> None:
    """`pixelscene eval adherence` scores prompts whose attribute combinations the model never
    saw; a model trained on them (a `--split all` dataset) would be scored on its training
    set, so say so."""
    from pixelscene.data.synth import heldout_images

    counts = heldout_images(data_dir)
    if counts and counts[0]:
        log.warning(
            "%d of %d training images show attribute combinations held out for evaluation: "
            "`pixelscene eval adherence` would overstate how this model generalises "
            "(make training data with `pixelscene synth --split train`)",
            *counts,
        )


def train_transformer(
    config: str | Path | Config,
    data_dir: str | Path,
    vqgan_dir: str | Path,
    out_dir: str | Path,
    eval_dir: str | Path | None = None,
    steps: int | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    stop_after: int | None = None,
    init_from: str | Path | None = None,
    max_minutes: float | None = None,
) -> TrainResult:
    """Train (or resume) and write the transformer into `out_dir`. See the module docstring.

    `stop_after` stops at that step as an interruption would (checkpoint saved, resumable).
    `init_from` starts a new run (optimizer and schedule from step 0) from that model folder's
    transformer weights, which must match the config's architecture: a fine-tune.
    `max_minutes` of wall time over the whole run (resumes included) ends it early, with a
    checkpoint and the model written (`budget_reached`).
    """
    out, vqgan_dir = Path(out_dir), Path(vqgan_dir)
    common.TimeBudget.check(max_minutes)  # before any work
    if resume and init_from is not None:
        raise PixelsceneError("--resume continues a run; --init-from starts one: use one of them")
    meta = common.resume_meta(out / CHECKPOINT_DIR, resume)
    if meta is not None:
        cfg = Config.from_dict(meta["config"])  # architecture comes from the checkpoint
        seed = int(meta["seed"])
        tok = Tokenizer.from_dict(meta["caption_tokenizer"])
    else:
        preset = config if isinstance(config, Config) else load_config(config)
        cfg = _output_config(preset, vqgan_dir, out)
    tcfg = cfg.train_transformer
    if steps is not None:
        tcfg.steps = steps

    group = distributed.init()
    with distributed.main_first(group):  # rank 0 builds the caches the others then read
        dataset = CaptionDataset(data_dir)
        _warn_if_heldout(data_dir)
        cache = ensure_token_cache(vqgan_dir, data_dir)
        layout = cfg.token_layout()
        if tuple(cache.codes.shape[1:]) != layout.shape:
            raise DataError(
                f"token cache codes of shape {cache.codes.shape[1:]} != the image tokenizer's "
                f"{layout.shape}"
            )
        if not resume:
            if init_from is not None and (Path(init_from) / "tokenizer.json").is_file():
                # the ids it was trained on
                tok = Tokenizer.load(Path(init_from) / "tokenizer.json")
            else:
                captions = [c for cs in dataset.captions_by_image().values() for c in cs]
                tok = Tokenizer.build(
                    captions, cfg.transformer.text_vocab_size, cfg.transformer.max_text_len
                )
        train = captioned_codes(cache, dataset, tok, cfg.transformer, progress)
        if tcfg.sprite_weight > 0:
            from pixelscene.data.sprites import CELL, sprite_coverage

            if cfg.image_tokenizer == "vqgan":
                pad, cell = cfg.vqgan.pad_rows, CELL
            else:
                pad, cell = cfg.tokenizer.pad_rows, cfg.tokenizer.patch_size
            cover = sprite_coverage(data_dir, train.names, tuple(pad), progress, cell)
            if cover.shape[1] != layout.grid[0] * layout.grid[1]:
                grid = layout.grid
                raise DataError(f"sprite grid of {cover.shape[1]} codes != the grid's {grid}")
            # tokens before the grid (a palette) cover no sprite
            train.sprites = np.pad(cover, ((0, 0), (layout.grid_start, 0)))
        held = None
        if eval_dir is not None:
            held = captioned_codes(
                ensure_token_cache(vqgan_dir, eval_dir),
                CaptionDataset(eval_dir),
                tok,
                cfg.transformer,
                progress,
            )
    log.info("training on %d images (%d captions)", len(train), len(train.ids))

    trainer = TransformerTrainer(cfg, out, seed, tok, train, held, init_from)
    trainer.start(resume, max_minutes)
    if resume:
        log.info("resuming at step %d", trainer.step)
    elif trainer.is_main:
        common.prepare_out_dir(out)
        weights = weights_file(cfg.image_tokenizer)
        if not (out / weights).exists() and out.resolve() != vqgan_dir.resolve():
            shutil.copy2(vqgan_dir / weights, out / weights)
    if trainer.is_main:
        save_model_config(out, cfg)
    mx.eval(trainer.model.parameters(), trainer.opt.state)
    trainer.model.train()
    bar = None if progress else False
    result = loop.run(trainer, tcfg, progress_bar=bar, stop_after=stop_after)
    if result.interrupted:
        log.warning("interrupted at step %d; resume with --resume", result.step)
    return result
