"""Train the categorical image tokenizer on random crops; evaluate on whole held-out images.

The loss is the cross-entropy of every pixel's DAC level per channel (64-way), so the
decoder learns to choose colours, not to average them. Crops come from several image
folders mixed by weight (our scenes and the procedural pattern material, so the tokenizer
holds any pixel art, not only what our renderer draws). Crop k of a run is a function of
(seed, k), so a resumed run replays the data the uninterrupted one would have seen. Under
`mlx.launch` each rank trains on its part of every batch (`train.distributed`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from pixelscene import model_io
from pixelscene.config import Config
from pixelscene.data.datasets import ImageDataset, to_float
from pixelscene.errors import DataError, PixelsceneError
from pixelscene.eval.vqgan_metrics import evaluate_vqgan
from pixelscene.imagetok.model import ImageTokenizer, color_levels
from pixelscene.imagetok.palette import image_palette, levels_of
from pixelscene.train import common, distributed, loop
from pixelscene.train.distributed import WHOLE, Shard
from pixelscene.train.loop import TrainResult

log = logging.getLogger(__name__)

CHECKPOINT = loop.CHECKPOINT
WEIGHTS = "tokenizer.safetensors"


class CropPool:
    """Every readable image of several folders in memory, padded as the model pads them;
    a batch is `batch` random crops, each from a folder drawn by weight. With `sprites`,
    the sprite masks of folders made by `pixelscene synth` come along (other folders'
    crops have none)."""

    def __init__(
        self,
        dirs: list[str | Path],
        weights: list[float],
        pad_rows: list[int],
        palette_size: int = 0,
        sprites: bool = False,
    ):
        if len(weights) != len(dirs) or min(weights) <= 0:
            raise PixelsceneError("--data-weights: one positive weight per --data folder")
        loaded = [self._load(d, pad_rows) for d in dirs]
        self.pools = [images for images, _ in loaded]
        # per folder: (N, H, W) bool masks of the padded images, or None
        self.masks: list[np.ndarray | None] = [
            self._masks(d, names, pad_rows) if sprites else None
            for d, (_, names) in zip(dirs, loaded, strict=True)
        ]
        # with a palette: each image's palette and every (padded) pixel's index into it
        self.palettes: list[np.ndarray] = []
        self.indices: list[np.ndarray] = []
        for pool in self.pools if palette_size else []:
            with ThreadPoolExecutor(2) as ex:
                pairs = list(ex.map(lambda im: image_palette(levels_of(im), palette_size), pool))
            self.palettes.append(np.stack([p for p, _ in pairs]))
            self.indices.append(np.stack([i for _, i in pairs]))
        w = np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()

    @staticmethod
    def _load(data_dir: str | Path, pad_rows: list[int]) -> tuple[np.ndarray, list[str]]:
        """(the folder's readable images, padded, and their file names)."""
        ds = ImageDataset(data_dir)
        with ThreadPoolExecutor(4) as pool:
            loaded = list(pool.map(lambda i: common.load_uint8(ds, i), range(len(ds))))
        names = [p.name for p, im in zip(ds.paths, loaded, strict=True) if im is not None]
        images = [im for im in loaded if im is not None]
        if not images:
            raise DataError(f"{data_dir}: no readable images to train on")
        log.info("%s: %d images", data_dir, len(images))
        pad = [(0, 0), tuple(pad_rows), (0, 0), (0, 0)]
        return np.pad(np.stack(images), pad, mode="edge"), names

    @staticmethod
    def _masks(data_dir: str | Path, names: list[str], pad_rows: list[int]) -> np.ndarray | None:
        """The folder's sprite masks, padded as its images, or None when it is not a
        `pixelscene synth` scene folder."""
        from pixelscene.data.sprites import sprite_masks

        if not (Path(data_dir) / "attributes.jsonl").is_file():
            log.info("%s: no attributes.jsonl, so no sprite masks", data_dir)
            return None
        masks = sprite_masks(data_dir, names)
        return np.pad(masks, [(0, 0), tuple(pad_rows), (0, 0)])

    def batch(self, size: int, crop: int, rng: np.random.Generator, shard: Shard = WHOLE):
        """(crops (B, S, S, 3) uint8, palettes (B, P, 3) or None, indices (B, S, S) or None,
        sprite masks (B, S, S) bool or None): the shard's part of a batch of `size` (every
        crop is drawn, the shard's are cut)."""
        sources = rng.choice(len(self.pools), size=size, p=self.weights)
        mine = range(size)[shard.part(size)]
        out, palettes, indices, masks = [], [], [], []
        for k, s in enumerate(sources):
            pool = self.pools[s]
            _, H, W, _ = pool.shape
            if crop > min(H, W):
                raise PixelsceneError(f"train_tokenizer.crop_size {crop} exceeds {H}x{W}")
            i = rng.integers(len(pool))
            y, x = rng.integers(0, H - crop + 1), rng.integers(0, W - crop + 1)
            if k not in mine:
                continue
            out.append(pool[i, y : y + crop, x : x + crop])
            if self.palettes:
                palettes.append(self.palettes[s][i])
                indices.append(self.indices[s][i, y : y + crop, x : x + crop])
            mask = self.masks[s]
            masks.append(
                np.zeros((crop, crop), bool)
                if mask is None
                else mask[i, y : y + crop, x : x + crop]
            )
        sprites = np.stack(masks) if any(m is not None for m in self.masks) else None
        if not self.palettes:
            return np.stack(out), None, None, sprites
        return np.stack(out), np.stack(palettes), np.stack(indices), sprites


def loss_pixels(
    rng: np.random.Generator, crops: int, pixels: int, fraction: float, shard: Shard = WHOLE
) -> np.ndarray:
    """Flat indices into `crops` crops of `pixels` each of the pixels the loss reads: the same
    number from every crop, drawn for the whole batch (all ranks' crops, in order) so that any
    split of it over ranks averages to the same loss."""
    k = max(1, int(round(pixels * fraction)))
    if k >= pixels:
        return np.arange(crops * pixels)
    picks = [np.sort(rng.choice(pixels, size=k, replace=False)) for _ in range(crops * shard.size)]
    mine = picks[shard.part(len(picks))]
    return np.concatenate([p + c * pixels for c, p in enumerate(mine)])


def load_matching(path: Path, model: nn.Module) -> None:
    """Start a new run from a model folder's weights: every parameter of the same name and
    shape is loaded; parameters the folder lacks (a newer architecture's) keep their
    initial values, and the run says which."""
    from mlx.utils import tree_flatten

    if not path.is_file():
        raise PixelsceneError(f"--init-from: no {path.name} in {path.parent}")
    stored = mx.load(str(path))
    own = dict(tree_flatten(model.parameters()))
    same = [
        (k, stored[k].astype(v.dtype))
        for k, v in own.items()
        if k in stored and stored[k].shape == v.shape
    ]
    fresh = sorted(set(own) - {k for k, _ in same})
    model.load_weights(same, strict=False)
    log.info("initialised from %s (%d tensors; new: %s)", path.parent, len(same), fresh or "none")


class TokenizerTrainer(loop.Trainer):
    """Owns the model, optimizer and compiled step of one training run."""

    desc = "tokenizer"
    unit = "crops"
    data_parallel = True

    def __init__(
        self,
        cfg: Config,
        out_dir: str | Path,
        seed: int = 0,
        pool: CropPool | None = None,
        eval_images: list[np.ndarray] | None = None,
        init_from: str | Path | None = None,
    ):
        super().__init__(out_dir, seed)
        self.cfg = cfg
        self.tc = cfg.train_tokenizer
        self.items_per_step = self.tc.batch_size  # crops, over all ranks
        self.shard.part(self.tc.batch_size)  # fails early if the batch does not split
        self.pool = pool
        self.eval_images = eval_images or []
        self.eval_masks: np.ndarray | None = None  # their sprite masks, where known
        mx.random.seed(seed)
        self.model = ImageTokenizer(cfg.tokenizer)
        if init_from is not None:
            load_matching(Path(init_from) / WEIGHTS, self.model)
            _warn_if_codes_differ(Path(init_from), cfg)
        mx.eval(self.model.parameters())
        schedule = common.warmup_cosine(self.tc.learning_rate, self.tc.warmup_steps, self.tc.steps)
        self.opt = optim.AdamW(
            learning_rate=schedule, betas=[0.9, 0.99], weight_decay=self.tc.weight_decay
        )
        self.opt.init(self.model.trainable_parameters())
        self.modules = {"tokenizer": self.model}
        self.optimizers = {"tokenizer": self.opt}
        self._step_fn = None

    def state(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict()}

    def restore(self, meta: dict[str, Any], arrays: dict[str, mx.array]) -> None:
        self._step_fn = None  # optimizer states were replaced: recompile

    def export(self, dtype: mx.Dtype = mx.float16) -> None:
        """OUT/config.json + tokenizer.safetensors (float16): a usable model folder."""
        cfg = Config.from_dict({**self.cfg.to_dict(), "image_tokenizer": "categorical"})
        model_io.save_model_config(self.out_dir, cfg)
        model_io.save_weights(self.out_dir / WEIGHTS, self.model, dtype=dtype)

    def _build_step(self) -> None:
        model, opt, clip, group = self.model, self.opt, self.tc.grad_clip, self.group
        levels = self.cfg.tokenizer.color_levels
        state = [model.state, opt.state, mx.random.state]

        def loss_fn(model: ImageTokenizer, x, idx, weights, palette=None, index=None):
            # The loss reads a random subset of the pixels (`loss_pixels`): the softmax of
            # every pixel costs more on a CPU than the network. `weights` (one per read
            # pixel, 1 or 1 + sprite_weight on sprites) make it a weighted mean.
            head = model.decoder.head
            if palette is not None:
                logits = model(x, palette, index)  # (B, S, S, P)
                logits = logits.reshape(-1, logits.shape[-1])[idx]
                target = index.reshape(-1)[idx]
                per_pixel = nn.losses.cross_entropy(logits, target)
                # over the whole batch's weight: the ranks' losses average to the batch's
                total = mx.stop_gradient(distributed.mean(weights.sum(), group))
                ce = (per_pixel * weights).sum() / total
                exact = (mx.argmax(logits, axis=-1) == target).mean()
                return ce, mx.stop_gradient(exact)
            target = color_levels(x, levels).reshape(-1, 3)[idx]  # (N, 3)
            features = model.decoder.features(model.quantize(x))
            params = head(features.reshape(-1, features.shape[-1])[idx])
            ce = head.nll(params, target)
            exact = (head.paint(params) == target).all(axis=-1).mean()
            return ce, mx.stop_gradient(exact)

        grad_fn = nn.value_and_grad(model, loss_fn)

        @partial(mx.compile, inputs=state, outputs=state)
        def step(x: mx.array, idx: mx.array, weights: mx.array, *palette_and_index) -> mx.array:
            (ce, exact), grads = grad_fn(model, x, idx, weights, *palette_and_index)
            grads = nn.average_gradients(grads, group)
            grads, norm = optim.clip_grad_norm(grads, clip)
            opt.update(model, grads)
            return distributed.mean(mx.stack([ce, exact, norm]), group)

        self._step_fn = step

    def train_step(
        self, x: mx.array, rng: np.random.Generator, palette=None, index=None, sprites=None
    ) -> dict[str, float]:
        """One step on crops (B, S, S, 3) in [-1, 1] (with their images' palettes and the
        crops' palette indices when the model has a palette, and their sprite masks when
        sprites weigh more); rng picks the loss's pixels."""
        if self._step_fn is None:
            self._build_step()
        idx = loss_pixels(rng, x.shape[0], x.shape[1] * x.shape[2], self.tc.loss_pixels, self.shard)
        weights = np.ones(len(idx), np.float32)
        if sprites is not None and self.tc.sprite_weight > 0:
            weights += self.tc.sprite_weight * sprites.reshape(-1)[idx]
        extra = [] if palette is None else [mx.array(palette), mx.array(index.astype(np.int32))]
        out = self._step_fn(x, mx.array(idx.astype(np.int32)), mx.array(weights), *extra)
        mx.eval(out)
        self.step += 1
        return dict(zip(["ce", "exact", "grad_norm"], np.array(out).tolist(), strict=True))

    # ---- the loop's hooks --------------------------------------------------------------
    def batch(self) -> tuple:
        """Crop k of a run (and the loss's pixels) are a function of (seed, k)."""
        rng = np.random.default_rng([self.seed, 0, self.step])
        crops, palettes, indices, sprites = self.pool.batch(
            self.tc.batch_size, self.tc.crop_size, rng, self.shard
        )
        return crops, palettes, indices, sprites, rng

    def update(self, batch: tuple) -> dict[str, float]:
        crops, palettes, indices, sprites, rng = batch
        return self.train_step(mx.array(to_float(crops)), rng, palettes, indices, sprites)

    def evaluate(self) -> dict[str, Any]:
        images = self.eval_images
        if self.eval_masks is not None:  # sprite figures too
            images = list(zip(images, self.eval_masks, strict=True))
        result = evaluate_vqgan(self.model, images)
        path = self.out_dir / "samples" / f"step_{self.step:06d}.png"
        common.save_reconstructions(path, self.model, self.eval_images)
        return result


def train_tokenizer(
    cfg: Config | None,
    data_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    data_weights: list[float] | None = None,
    steps: int | None = None,
    resume: bool = False,
    eval_dir: str | Path | None = None,
    seed: int = 0,
    progress_bar: bool | None = None,
    stop_after: int | None = None,
    max_minutes: float | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train (or resume) the categorical tokenizer into out_dir; see `pixelscene train
    tokenizer --help`. Resuming takes the config from the checkpoint; `steps` may extend it.
    `init_from` starts a new run from a model folder's weights (those that still fit)."""
    if resume and init_from is not None:
        raise PixelsceneError("--resume continues a run; --init-from starts one: use one of them")
    out_dir = Path(out_dir)
    ckpt = out_dir / CHECKPOINT
    cfg, seed = common.run_config(ckpt, cfg, seed, resume=resume, max_minutes=max_minutes)
    if steps is not None:
        cfg.train_tokenizer.steps = steps
    tc = cfg.train_tokenizer
    if tc.sprite_weight > 0 and not cfg.tokenizer.palette_size:
        raise PixelsceneError("train_tokenizer.sprite_weight needs tokenizer.palette_size > 0")
    if tc.crop_size % cfg.tokenizer.patch_size:
        raise PixelsceneError(
            f"train_tokenizer.crop_size {tc.crop_size} is not a multiple of "
            f"tokenizer.patch_size {cfg.tokenizer.patch_size}"
        )

    common.prepare_out_dir(out_dir)
    trainer = TokenizerTrainer(cfg, out_dir, seed=seed, init_from=init_from)
    trainer.start(resume, max_minutes)
    with distributed.main_first(trainer.group):  # rank 0 writes the sprite mask caches
        trainer.pool = CropPool(
            list(data_dirs),
            data_weights or [1.0] * len(data_dirs),
            cfg.tokenizer.pad_rows,
            cfg.tokenizer.palette_size,
            sprites=tc.sprite_weight > 0,
        )
    eval_set = ImageDataset(eval_dir if eval_dir else data_dirs[0])
    if not eval_dir:
        log.warning("no --eval-data: evaluating on training images")
    trainer.eval_images = common.readable_images(eval_set, tc.eval_images)
    trainer.eval_masks = _eval_masks(eval_set, len(trainer.eval_images))
    return loop.run(trainer, tc, progress_bar=progress_bar, stop_after=stop_after)


def _eval_masks(eval_set: ImageDataset, count: int) -> np.ndarray | None:
    """The sprite masks of an evaluation set's first `count` images when it is a scene folder
    made by `pixelscene synth` and they were all readable, else None."""
    from pixelscene.data.sprites import sprite_masks

    folder = eval_set.image_dir.parent
    if eval_set.problems or not (folder / "attributes.jsonl").is_file():
        return None
    try:
        return sprite_masks(folder, [p.name for p in eval_set.paths[:count]], progress=False)
    except DataError as e:
        log.warning("no sprite figures in evaluations: %s", e)
        return None


def _warn_if_codes_differ(init_from: Path, cfg: Config) -> None:
    """Weights of the same shapes load whatever FSQ grid they were trained for: say so when
    the new run's grid differs from the folder's (a deliberate change, or the wrong preset)."""
    try:
        theirs = model_io.load_model_config(init_from).tokenizer.fsq_levels
    except PixelsceneError:
        return  # a folder without a readable config.json: nothing to compare
    if list(theirs) != list(cfg.tokenizer.fsq_levels):
        log.warning(
            "--init-from %s was trained with FSQ levels %s; this run uses %s (its codes differ)",
            init_from,
            list(theirs),
            list(cfg.tokenizer.fsq_levels),
        )
