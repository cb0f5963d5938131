"""Train the text-conditioned transformer on a token cache of VQGAN codes.

Habits shared with the VQGAN trainer: a compiled step whose state is the model, optimizer and
random state; AdamW with linear warmup then cosine decay; a tqdm bar with loss and tokens/s;
held-out loss every `eval_every` steps appended to MODEL_DIR/eval_transformer.jsonl;
checkpoints with optimizer state; exact resume (the data order and the random key of every
step are functions of (seed, step)); Ctrl-C or SIGTERM saves a checkpoint before stopping.

Output goes into the VQGAN's model folder: transformer.safetensors (float16), tokenizer.json,
and the transformer sections of config.json.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from pixelscene.config import Config, TransformerConfig, load_config
from pixelscene.data.datasets import CaptionDataset, epoch_order
from pixelscene.data.text_states import minilm_caption_inputs
from pixelscene.data.token_cache import TokenCache, ensure_token_cache
from pixelscene.errors import DataError, PixelsceneError
from pixelscene.model_io import load_model_config, load_weights, save_model_config, save_weights
from pixelscene.pipeline import build_transformer
from pixelscene.train.common import TimeBudget, prepare_out_dir, stop_on_signals
from pixelscene.transformer.model import ImageTransformer
from pixelscene.transformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoint_transformer"
EVAL_LOG = "eval_transformer.jsonl"


@dataclass
class CaptionedCodes:
    """Codes (N, S) int32 with each image's tokenized captions (C, L) and their ranges."""

    codes: np.ndarray
    ids: np.ndarray
    mask: np.ndarray
    start: np.ndarray  # (N,) first caption row of each image
    count: np.ndarray  # (N,) captions of each image
    names: list[str] = field(default_factory=list)  # (N,) image file names
    sprites: np.ndarray | None = None  # (N, S) sprite coverage of each code (`sprite_weight`)

    def __len__(self) -> int:
        return len(self.codes)


def captioned_codes(
    cache: TokenCache,
    dataset: CaptionDataset,
    tok: Tokenizer,
    cfg: TransformerConfig | None = None,
    progress: bool = True,
) -> CaptionedCodes:
    """Pair every cached image that has captions with all of its captions.

    With text_encoder "minilm", `ids` holds the captions' precomputed MiniLM states (read by
    row, see `StateRows`) instead of token ids; they are cached beside the token cache.
    """
    index = cache.index()
    by_image = dataset.captions_by_image()
    missing = [n for n in by_image if n not in index]
    if missing:
        raise DataError(f"token cache lacks {len(missing)} captioned images, e.g. {missing[0]}")
    names = list(by_image)
    captions = [c for n in names for c in by_image[n]]
    count = np.array([len(by_image[n]) for n in names], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    codes = cache.codes[[index[n] for n in names]].reshape(len(names), -1).astype(np.int32)
    if cfg is not None and cfg.text_encoder == "minilm":
        ids, mask = minilm_caption_inputs(
            captions, dataset.captions_file.parent, cfg.max_text_len, progress=progress
        )
    else:
        ids, mask = tok.encode_batch(captions)
    return CaptionedCodes(codes, ids, mask, start, count, names)


def batch_at(data: CaptionedCodes, batch_size: int, seed: int, step: int):
    """The batch of a given step: a pure function of (seed, step), so resume is exact."""
    idx, rows = batch_rows(data, batch_size, seed, step)
    return data.codes[idx], data.ids[rows], data.mask[rows]


def batch_rows(data: CaptionedCodes, batch_size: int, seed: int, step: int):
    """`batch_at`'s images (B,) and the caption row picked for each (B,)."""
    per_epoch = max(1, len(data) // batch_size)
    epoch, j = divmod(step, per_epoch)
    order = epoch_order(len(data), seed, epoch)
    idx = order[j * batch_size : (j + 1) * batch_size]
    if len(idx) < batch_size:  # dataset smaller than a batch: wrap around
        idx = np.resize(order, batch_size)
    pick = np.random.default_rng([seed, epoch, 7]).integers(0, 1 << 30, len(data))
    rows = data.start[idx] + pick[idx] % data.count[idx]
    return idx, rows


def lr_schedule(cfg) -> optim.schedulers:
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    cosine = optim.cosine_decay(
        cfg.learning_rate, max(cfg.steps - warmup, 1), cfg.learning_rate * 0.05
    )
    if warmup == 0:
        return cosine
    return optim.join_schedules(
        [optim.linear_schedule(0.0, cfg.learning_rate, warmup), cosine], [warmup]
    )


def position_weights(seq_len: int, row_len: int, first_row_weight: float) -> mx.array:
    """(seq_len,) loss weights with mean 1: the first `row_len` codes weigh
    `first_row_weight` times the others."""
    w = mx.where(mx.arange(seq_len) < row_len, first_row_weight, 1.0)
    return w * (seq_len / w.sum())


def sprite_weights(position: np.ndarray, coverage: np.ndarray, sprite_weight: float) -> np.ndarray:
    """(B, S) loss weights with mean 1: each code's position weight times 1 + sprite_weight x
    the fraction of its cell that sprites cover (coverage (B, S))."""
    w = position[None, :] * (1.0 + sprite_weight * coverage)
    return (w / w.mean()).astype(np.float32)


def noisy_states(states: mx.array, scale: float) -> mx.array:
    """States plus Gaussian noise of `scale` times each state's RMS (training only)."""
    states = states.astype(mx.float32)
    rms = mx.sqrt(mx.mean(states * states, axis=-1, keepdims=True) + 1e-6)
    return states + scale * rms * mx.random.normal(states.shape)


def sequence_loss(
    model: ImageTransformer, codes, ids, mask, drop=None, weights=None, text_noise=0.0
) -> mx.array:
    """Mean next-code cross-entropy; rows where `drop` is True see the null caption.

    `ids` are token ids for the learned encoder, or a frozen encoder's precomputed states.
    `weights` (S,) or (B, S) with mean 1 weighs the codes (see `position_weights`,
    `sprite_weights`); `text_noise` perturbs a frozen encoder's states (see `noisy_states`).
    """
    if "text_encoder" in model:
        states, mask = model.encode_text(ids, mask)
    else:
        states, mask = ids, mask.astype(mx.bool_)
        if text_noise > 0:
            states = noisy_states(states, text_noise)
    if drop is not None:
        mask = mask & ~drop[:, None]
    logits = model(codes, states, mask)
    if weights is None:
        return nn.losses.cross_entropy(logits, codes, reduction="mean")
    return (nn.losses.cross_entropy(logits, codes, reduction="none") * weights).mean()


@dataclass
class TrainResult:
    step: int
    train_loss: float
    eval_loss: float | None
    tokens_per_s: float
    interrupted: bool = False
    history: list[dict] = field(default_factory=list)
    budget_reached: bool = False  # stopped by --max-minutes (exported, resumable)


def evaluate(model: ImageTransformer, data: CaptionedCodes, batch_size: int = 64, limit: int = 256):
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


def _save_checkpoint(ckpt: Path, model, optimizer, meta: dict, tok: Tokenizer) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(tmp / "model.safetensors", model)
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    tok.save(tmp / "tokenizer.json")
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    old = ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        ckpt.rename(old)
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def _truncate_eval_log(path: Path, step: int) -> None:
    """On resume, forget eval rows written after the checkpoint (they will be redone)."""
    if path.is_file():
        rows = [r for r in path.read_text().splitlines() if r and json.loads(r)["step"] <= step]
        path.write_text("".join(r + "\n" for r in rows))


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
    from tqdm import tqdm

    out, vqgan_dir = Path(out_dir), Path(vqgan_dir)
    ckpt = out / CHECKPOINT_DIR
    TimeBudget.check(max_minutes)  # before any work
    meta: dict = {}
    if resume and init_from is not None:
        raise PixelsceneError("--resume continues a run; --init-from starts one: use one of them")
    if resume:
        if not (ckpt / "state.json").is_file():
            raise PixelsceneError(f"--resume: no checkpoint in {ckpt}")
        meta = json.loads((ckpt / "state.json").read_text())
        cfg = Config.from_dict(meta["config"])  # architecture comes from the checkpoint
        seed = meta["seed"]
        tok = Tokenizer.load(ckpt / "tokenizer.json")
    else:
        preset = config if isinstance(config, Config) else load_config(config)
        cfg = _output_config(preset, vqgan_dir, out)
    tcfg = cfg.train_transformer
    if steps is not None:
        tcfg.steps = steps

    dataset = CaptionDataset(data_dir)
    _warn_if_heldout(data_dir)
    cache = ensure_token_cache(vqgan_dir, data_dir)
    H, W = cache.codes.shape[1:]
    if (H, W) != tuple(cfg.vqgan.grid_size):
        raise DataError(f"token cache grid {H}x{W} != the VQGAN's {cfg.vqgan.grid_size}")
    if not resume:
        if init_from is not None and (Path(init_from) / "tokenizer.json").is_file():
            tok = Tokenizer.load(Path(init_from) / "tokenizer.json")  # the ids it was trained on
        else:
            captions = [c for cs in dataset.captions_by_image().values() for c in cs]
            tok = Tokenizer.build(
                captions, cfg.transformer.text_vocab_size, cfg.transformer.max_text_len
            )
    train = captioned_codes(cache, dataset, tok, cfg.transformer, progress)
    if tcfg.sprite_weight > 0:
        from pixelscene.data.sprites import sprite_coverage

        pad = tuple(cfg.vqgan.pad_rows)
        train.sprites = sprite_coverage(data_dir, train.names, pad, progress)
        if train.sprites.shape[1] != H * W:
            raise DataError(f"sprite grid of {train.sprites.shape[1]} codes != the VQGAN's {H * W}")
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

    mx.random.seed(seed)
    model = build_transformer(cfg)  # the grid matches the token cache (checked above)
    if init_from is not None and not resume:
        load_weights(Path(init_from) / "transformer.safetensors", model)
        log.info("starting from the weights in %s", init_from)
    optimizer = optim.AdamW(lr_schedule(tcfg), weight_decay=tcfg.weight_decay)
    optimizer.init(model.trainable_parameters())
    start = 0
    best = math.inf
    if resume:
        model.load_weights(str(ckpt / "model.safetensors"), strict=True)
        opt_state = tree_unflatten(list(mx.load(str(ckpt / "optimizer.safetensors")).items()))
        optimizer.state = opt_state
        optimizer.init(model.trainable_parameters())  # marks it initialized; keeps loaded state
        start, best = meta["step"], meta.get("best_eval", math.inf)
        _truncate_eval_log(out / EVAL_LOG, start)
        log.info("resuming at step %d", start)
    else:
        prepare_out_dir(out)
        if not (out / "vqgan.safetensors").exists() and out.resolve() != vqgan_dir.resolve():
            shutil.copy2(vqgan_dir / "vqgan.safetensors", out / "vqgan.safetensors")
        (out / EVAL_LOG).unlink(missing_ok=True)
    save_model_config(out, cfg)
    mx.eval(model.parameters(), optimizer.state)
    model.train()

    p_drop = cfg.transformer.cfg_dropout
    text_noise = tcfg.text_noise
    position = np.array(position_weights(H * W, W, tcfg.first_row_weight))
    clip = tcfg.grad_clip
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step_fn(codes, ids, mask, weights):
        drop = mx.random.uniform(shape=(codes.shape[0],)) < p_drop
        loss_and_grad = nn.value_and_grad(model, sequence_loss)
        loss, grads = loss_and_grad(model, codes, ids, mask, drop, weights, text_noise)
        if clip > 0:
            grads, _ = optim.clip_grad_norm(grads, clip)
        optimizer.update(model, grads)
        return loss

    budget = TimeBudget(max_minutes, meta.get("wall_s", 0.0) if resume else 0.0)

    def save(step: int, train_loss: float) -> None:
        meta = {"step": step, "seed": seed, "best_eval": best, "train_loss": train_loss}
        meta["wall_s"] = budget.spent_s
        meta["config"] = cfg.to_dict()
        _save_checkpoint(ckpt, model, optimizer, meta, tok)
        if held is None:
            _write_model(out, model, tok)

    tokens_per_step = tcfg.batch_size * H * W
    history: list[dict] = []
    ema = meta.get("train_loss") if resume else None
    eval_loss = None
    t_rate, n_rate, rate = time.perf_counter(), 0, 0.0
    step = start
    bar = tqdm(total=tcfg.steps, initial=start, disable=not progress, desc="transformer")
    with stop_on_signals() as request:
        stopped = budget_reached = False
        while step < tcfg.steps and not (stopped or request):
            if budget.reached():
                budget_reached = True
                break
            idx, rows = batch_rows(train, tcfg.batch_size, seed, step)
            codes, ids, mask = train.codes[idx], train.ids[rows], train.mask[rows]
            weights = position
            if train.sprites is not None:
                weights = sprite_weights(position, train.sprites[idx], tcfg.sprite_weight)
            mx.random.seed(seed * 1_000_003 + step)
            loss = step_fn(mx.array(codes), mx.array(ids), mx.array(mask), mx.array(weights))
            mx.eval(loss, state)
            step += 1
            n_rate += 1
            value = loss.item()
            ema = value if ema is None else 0.98 * ema + 0.02 * value
            if step % tcfg.log_every == 0 or step == tcfg.steps:
                now = time.perf_counter()
                rate = n_rate * tokens_per_step / (now - t_rate)
                t_rate, n_rate = now, 0
                bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{rate:,.0f}")
            bar.update(1)
            if held is not None and (step % tcfg.eval_every == 0 or step == tcfg.steps):
                eval_loss = evaluate(model, held)
                row = {
                    "step": step,
                    "train_loss": round(ema, 5),
                    "eval_loss": round(eval_loss, 5),
                    "lr": float(optimizer.learning_rate.item()),
                    "tokens_per_s": round(rate, 1),
                }
                history.append(row)
                with (out / EVAL_LOG).open("a") as f:
                    f.write(json.dumps(row) + "\n")
                bar.write(f"step {step}: train {ema:.4f}  held-out {eval_loss:.4f}")
                if eval_loss < best:
                    best = eval_loss
                    _write_model(out, model, tok)
            if step % tcfg.checkpoint_every == 0 or step == tcfg.steps:
                save(step, ema)
            stopped = stop_after is not None and step >= stop_after
        bar.close()
        stopped = stopped or bool(request)
        if (stopped or budget_reached) and step % tcfg.checkpoint_every and step != tcfg.steps:
            save(step, ema if ema is not None else float("nan"))
            if stopped:
                log.warning("interrupted at step %d; resume with --resume", step)
    if not (out / "transformer.safetensors").exists():
        _write_model(out, model, tok)
    return TrainResult(step, ema or float("nan"), eval_loss, rate, stopped, history, budget_reached)
