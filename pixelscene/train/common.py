"""Helpers shared by the trainers: checkpoints, the learning-rate schedule, interrupts, time
budgets, progress bars, logs and sample grids. The loop that uses them is `train.loop`.

A checkpoint is a folder written atomically (a temporary sibling renamed into place):

    CKPT/meta.json                 step, seed, elapsed_s, wall_s, config and any JSON-able
                                   trainer state
    CKPT/<name>.safetensors        one per module (weights, float32)
    CKPT/<name>.opt.safetensors    one per optimizer (its full state, incl. its step)
    CKPT/arrays.safetensors        extra arrays (code-usage counters, ...)

MLX's random state is not stored: the trainers re-seed it from (seed, step) at every
checkpoint and on resume, so a resumed run draws what the uninterrupted one would.

`save_checkpoint` and `load_checkpoint` take the same dicts of modules and optimizers, so
a trainer resumes by building its objects from the stored config and loading into them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from pixelscene.config import Config
from pixelscene.data.datasets import ImageDataset, to_float, to_uint8
from pixelscene.errors import DataError, PixelsceneError

log = logging.getLogger(__name__)


class CheckpointError(PixelsceneError):
    """A checkpoint folder is missing or does not match what the trainer builds."""


def prepare_out_dir(path: str | Path) -> Path:
    """Create a run's output folder (and its parents); a path that cannot be one is an
    input error naming it, not a traceback."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PixelsceneError(f"--out {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PixelsceneError(f"--out {path}: cannot create the folder: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise PixelsceneError(f"--out {path}: not writable")
    return path


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    *,
    modules: dict[str, nn.Module],
    optimizers: dict[str, optim.Optimizer],
    meta: dict[str, Any],
    arrays: dict[str, mx.array] | None = None,
) -> None:
    """Write a checkpoint folder atomically (readers never see a half-written one)."""
    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir.with_name(f".{ckpt_dir.name}.tmp")
    old = ckpt_dir.with_name(f".{ckpt_dir.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        mx.save_safetensors(
            str(tmp / f"{name}.safetensors"), dict(tree_flatten(module.parameters()))
        )
    for name, opt in optimizers.items():
        mx.save_safetensors(str(tmp / f"{name}.opt.safetensors"), dict(tree_flatten(opt.state)))
    mx.save_safetensors(str(tmp / "arrays.safetensors"), dict(arrays or {}))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(old, ignore_errors=True)
    if ckpt_dir.exists():
        os.replace(ckpt_dir, old)
    os.replace(tmp, ckpt_dir)
    shutil.rmtree(old, ignore_errors=True)


def read_checkpoint_meta(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """meta.json of a checkpoint (step, config, ...), without loading any weights."""
    path = Path(ckpt_dir) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"no readable checkpoint at {ckpt_dir} ({e})") from None


def resume_meta(ckpt_dir: str | os.PathLike, resume: bool) -> dict[str, Any] | None:
    """meta.json of the checkpoint a resumed run continues; None for a new run, which must
    not overwrite a checkpoint."""
    ckpt_dir = Path(ckpt_dir)
    if resume:
        return read_checkpoint_meta(ckpt_dir)
    if (ckpt_dir / "meta.json").exists():
        raise PixelsceneError(f"{ckpt_dir} exists: pass --resume to continue it, or another --out")
    return None


def run_config(
    ckpt_dir: str | os.PathLike,
    cfg: Config | None,
    seed: int,
    *,
    resume: bool,
    max_minutes: float | None,
) -> tuple[Config, int]:
    """The config and seed of a run: a resumed run's come from its checkpoint (the
    architecture is never taken from the command line); a new run needs a config. Checks
    the time budget first, before any work."""
    TimeBudget.check(max_minutes)
    meta = resume_meta(ckpt_dir, resume)
    if meta is not None:
        return Config.from_dict(meta["config"]), int(meta["seed"])
    if cfg is None:
        raise PixelsceneError("a config is needed to start a new run")
    return cfg, seed


def load_checkpoint(
    ckpt_dir: str | os.PathLike,
    *,
    modules: dict[str, nn.Module],
    optimizers: dict[str, optim.Optimizer],
) -> tuple[dict[str, Any], dict[str, mx.array]]:
    """Load weights and optimizer states in place; returns (meta, extra arrays).

    Optimizer states are replaced wholesale, so build compiled step functions (which
    capture `optimizer.state`) after loading.
    """
    ckpt_dir = Path(ckpt_dir)
    meta = read_checkpoint_meta(ckpt_dir)
    for name, module in modules.items():
        weights = mx.load(str(ckpt_dir / f"{name}.safetensors"))
        expected = dict(tree_flatten(module.parameters()))
        bad = sorted(set(weights) ^ set(expected)) or [
            k for k in expected if weights[k].shape != expected[k].shape
        ]
        if bad:
            raise CheckpointError(
                f"{ckpt_dir}/{name}.safetensors does not match the model: {bad[:3]}"
            )
        module.load_weights(list(weights.items()), strict=True)
    for name, opt in optimizers.items():
        state = mx.load(str(ckpt_dir / f"{name}.opt.safetensors"))
        opt.state = tree_unflatten(list(state.items()))
    arrays = mx.load(str(ckpt_dir / "arrays.safetensors"))
    mx.eval([m.parameters() for m in modules.values()], [o.state for o in optimizers.values()])
    return meta, arrays


def warmup_cosine(
    base_lr: float,
    warmup: int,
    total: int,
    final_frac: float = 0.1,
    start_lr: float | None = None,
) -> Callable:
    """The learning-rate schedule of every trainer: linear warm-up from `start_lr` to
    `base_lr` over `warmup` steps, then cosine decay to `final_frac * base_lr` at `total`.

    `start_lr` None starts at `base_lr / warmup` (one step's share), so the warm-up is at
    least one step; with a given `start_lr` a warm-up of 0 steps is plain cosine decay.
    """
    if start_lr is None:
        warmup = max(1, min(warmup, total - 1))
        start_lr = base_lr / warmup
    else:
        warmup = min(warmup, max(total - 1, 0))
    decay = optim.cosine_decay(base_lr, max(1, total - warmup), base_lr * final_frac)
    if warmup == 0:
        return decay
    return optim.join_schedules([optim.linear_schedule(start_lr, base_lr, warmup), decay], [warmup])


def schedule_value(schedule: Callable | float, step: int) -> float:
    return float(schedule(mx.array(step))) if callable(schedule) else float(schedule)


class StopRequest:
    """Set by SIGINT/SIGTERM inside `stop_on_signals`; the loop checks it after each step."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """First Ctrl-C/SIGTERM asks the loop to checkpoint and stop; a second one aborts."""
    request = StopRequest()
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        if request:
            raise KeyboardInterrupt
        request.signal = signum
        log.warning("signal %d: saving a checkpoint after this step (again to abort)", signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield request
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


class TimeBudget:
    """A run's training wall time, counted across resumes (`spent_s` comes back from the
    checkpoint), against an optional limit: `pixelscene train ... --max-minutes M` stops,
    checkpoints and exports once M minutes are spent, so a run keeps to a budget such as
    the bundled presets' 2 hours, however often it is interrupted and resumed."""

    def __init__(self, max_minutes: float | None = None, spent_s: float = 0.0):
        self.check(max_minutes)
        self.limit_s = None if max_minutes is None else 60.0 * float(max_minutes)
        self._before = float(spent_s)
        self._t0 = time.perf_counter()

    @staticmethod
    def check(max_minutes: float | None) -> None:
        """A limit must be a positive number of minutes (NaN is not)."""
        if max_minutes is not None and not max_minutes > 0:
            raise PixelsceneError(f"--max-minutes must be > 0, got {max_minutes}")

    @property
    def spent_s(self) -> float:
        return self._before + time.perf_counter() - self._t0

    def reached(self) -> bool:
        if self.limit_s is None or self.spent_s < self.limit_s:
            return False
        log.warning(
            "time budget reached: %.1f of %.1f minutes spent; --resume with a larger "
            "--max-minutes to go on",
            self.spent_s / 60,
            self.limit_s / 60,
        )
        return True


class Throughput:
    """Items per second over a sliding window of recent steps."""

    def __init__(self, window: int = 20):
        self.window = window
        self.marks: list[tuple[float, int]] = []

    def add(self, items: int) -> float:
        now = time.perf_counter()
        total = (self.marks[-1][1] if self.marks else 0) + items
        self.marks.append((now, total))
        self.marks = self.marks[-self.window :]
        if len(self.marks) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (n1 - n0) / max(t1 - t0, 1e-9)


def progress(total: int, initial: int = 0, desc: str = "", disable: bool | None = None):
    """A tqdm bar for a step loop (disabled when stderr is not a terminal unless forced)."""
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, dynamic_ncols=True, disable=disable, smoothing=0.1
    )


def format_losses(values: dict[str, float]) -> dict[str, str]:
    """Short strings for a progress-bar postfix."""
    return {
        k: (f"{v:.4f}" if abs(v) < 100 and not math.isnan(v) else f"{v:.3g}")
        for k, v in values.items()
    }


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_jsonl(path: Path, step: int) -> None:
    """Forget the rows of a log written after `step` (a resumed run redoes those steps)."""
    if path.is_file():
        rows = [r for r in path.read_text().splitlines() if r and json.loads(r)["step"] <= step]
        path.write_text("".join(r + "\n" for r in rows))


def save_reconstructions(path: Path, model: Any, images: list[np.ndarray]) -> None:
    """A PNG of up to four images (uint8) above the model's reconstructions of them."""
    originals = np.stack(images[:4])
    recons = to_uint8(np.array(model.reconstruct(mx.array(to_float(originals)))))
    save_rows(path, [originals, recons])


def save_rows(path: Path, rows: list[np.ndarray]) -> None:
    """A PNG of rows of uint8 images (each row (N, H, W, 3)), one row above the next."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    Image.fromarray(grid).save(path)


def load_uint8(ds: ImageDataset, idx: int) -> np.ndarray | None:
    """An image of a dataset, or None (reported in the dataset's problems) if unreadable."""
    try:
        return ds.load_uint8(idx)
    except DataError as e:
        ds._problem(str(e))
        return None


def readable_images(ds: ImageDataset, count: int) -> list[np.ndarray]:
    """The first `count` readable images of a dataset (unreadable ones reported, skipped)."""
    images: list[np.ndarray] = []
    for i in range(len(ds)):
        if len(images) == count:
            break
        image = load_uint8(ds, i)
        if image is not None:
            images.append(image)
    if not images:
        raise DataError(f"{ds.image_dir}: no readable images to evaluate on")
    return images
