"""The one training loop, and the shape of a trainer that it runs.

A trainer (a `Trainer` subclass) owns its model, optimizers and data, and supplies:

    batch()          the current step's data, a function of (seed, step) so a resumed run
                     replays what the uninterrupted one would have seen
    update(batch)    one optimisation step (it advances `step`); returns the values to log
    evaluate()       metrics for the eval log, or None
    export()         the usable model files, written at every checkpoint and at the end
    state(), arrays(), restore()
                     what its checkpoint holds besides the common fields (train.common)

`run` owns the rest: the step loop, the time budget, Ctrl-C/SIGTERM, the progress bar, the
train and eval logs (JSON lines in the output folder), periodic evaluation and checkpoints,
and the `TrainResult` every trainer returns. A caller that is not a terminal (a queue
worker) hears each logged step and evaluation, and may stop the run, through `Hooks`.

Under `mlx.launch` every rank runs this loop (`train.distributed`): a trainer that sets
`data_parallel` keeps its `shard` of each global batch and averages its gradients over
`group`; rank 0 alone logs, evaluates, checkpoints and exports, and every rank stops at the
same step.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from pixelscene.errors import PixelsceneError
from pixelscene.train import common, distributed

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"


@dataclass
class TrainResult:
    step: int
    interrupted: bool  # stopped by a signal or `stop_after` (checkpoint saved, resumable)
    seconds_per_step: float  # median over this session's steps
    last_eval: dict[str, Any] | None
    budget_reached: bool = False  # stopped by --max-minutes (evaluated, exported, resumable)
    last_train: dict[str, float] | None = None  # the values logged for the last step


@dataclass
class Progress:
    """What a run tells a listener after a logged step or an evaluation."""

    step: int
    total: int
    losses: dict[str, float]  # the values of the last logged step
    items_per_s: float
    unit: str  # what items_per_s counts (img, tokens, crops)
    eta_s: float | None  # to `total`, from recent steps (or to the time budget, if sooner)
    eval: dict[str, Any] | None  # the latest evaluation row
    sample: Path | None  # the newest sample grid in the run's samples/ folder


@dataclass
class Hooks:
    """A caller's part in a run, asked once per step: `should_stop` (true: checkpoint and
    return `interrupted`, as a signal would) and `on_progress` (each logged step and
    evaluation)."""

    should_stop: Callable[[], bool] | None = None
    on_progress: Callable[[Progress], None] | None = None


_HOOKS: ContextVar[Hooks | None] = ContextVar("pixelscene_train_hooks", default=None)


@contextmanager
def listening(hooks: Hooks) -> Iterator[Hooks]:
    """Runs inside this block use `hooks`. Every trainer's entry point ends in `run`, which
    reads them here, so no trainer has to pass them along."""
    token = _HOOKS.set(hooks)
    try:
        yield hooks
    finally:
        _HOOKS.reset(token)


class Trainer:
    """Common state of a run (step, seed, time spent), its checkpoint and its hooks."""

    desc = "train"  # the progress bar's label
    unit = "img"  # what `items_per_step` counts: "img/s" on the bar, "img_per_s" in the log
    items_per_step = 1
    checkpoint: str | None = CHECKPOINT  # folder in out_dir; None: no checkpoints, no resume
    train_log = "train.jsonl"
    eval_log = "eval.jsonl"
    eval_at_start = False  # evaluate before the first step of a new run (a baseline)
    data_parallel = False  # shards its batches and averages its gradients over `group`

    def __init__(self, out_dir: str | Path, seed: int = 0):
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.step = 0
        self.elapsed = 0.0  # seconds in training steps
        self.wall_s = 0.0  # wall time of earlier sessions of this run, evaluations included
        self.budget = common.TimeBudget()  # this session's, counting on from wall_s
        self.resumed = False
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, optim.Optimizer] = {}
        self.group = distributed.init()  # the ranks of `mlx.launch`, or this process alone
        self.shard = distributed.Shard.of(self.group)  # this rank's rows of a global batch

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that writes."""
        return self.shard.rank == 0

    # ---- what each trainer supplies -----------------------------------------------------
    def batch(self) -> Any:
        return None

    def update(self, batch: Any) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, Any] | None:
        return None

    def export(self) -> None:
        pass

    def state(self) -> dict[str, Any]:
        """JSON-able trainer state for meta.json, besides step, seed and times."""
        return {}

    def arrays(self) -> dict[str, mx.array]:
        return {}

    def restore(self, meta: dict[str, Any], arrays: dict[str, mx.array]) -> None:
        """Take back `state()` and `arrays()` from a loaded checkpoint."""

    def after_step(self) -> None:
        """After the step is logged, before it is evaluated (sample grids, ...); rank 0
        only."""

    def status(self) -> dict[str, str]:
        """Extra progress-bar fields."""
        return {}

    def close(self) -> None:
        """At the end of the session, whatever way it ends."""

    # ---- checkpoints --------------------------------------------------------------------
    def reseed(self) -> None:
        """MLX's random state cannot be restored, so it restarts from (seed, step) at every
        checkpoint, in a straight run and in a resumed one alike."""
        mx.random.seed(int(np.random.default_rng([self.seed, 3, self.step]).integers(2**31)))

    def save(self) -> None:
        """Checkpoint (weights in float32, optimizer states, counters) and export (rank 0);
        every rank re-seeds."""
        if self.checkpoint is not None and self.is_main:
            meta = {
                "step": self.step,
                "seed": self.seed,
                "elapsed_s": self.elapsed,
                "wall_s": self.budget.spent_s,
                **self.state(),
            }
            common.save_checkpoint(
                self.out_dir / self.checkpoint,
                modules=self.modules,
                optimizers=self.optimizers,
                meta=meta,
                arrays=self.arrays(),
            )
        self.reseed()
        if self.is_main:
            self.export()

    def load(self) -> None:
        meta, arrays = common.load_checkpoint(
            self.out_dir / self.checkpoint, modules=self.modules, optimizers=self.optimizers
        )
        self.step = int(meta["step"])
        self.seed = int(meta.get("seed", self.seed))
        self.elapsed = float(meta.get("elapsed_s", 0.0))
        self.wall_s = float(meta.get("wall_s", self.elapsed))
        self.resumed = True
        self.restore(meta, arrays)
        self.reseed()

    def start(self, resume: bool, max_minutes: float | None) -> None:
        """Load the checkpoint when resuming; the time budget counts on from its wall time."""
        if resume:
            self.load()
        self.budget = common.TimeBudget(max_minutes, self.wall_s)


@dataclass
class Plan:
    """When a run logs, evaluates and checkpoints; a trainer's config section (train_vqgan,
    ...) serves as one, having these fields."""

    steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int | None = None  # None: never (a trainer without checkpoints)


def run(
    trainer: Trainer,
    plan: Plan | Any,
    *,
    progress_bar: bool | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train until `plan.steps` (or the time budget, a signal, `stop_after`), then evaluate
    and save.

    Every `log_every` steps (and the first) the step's values go to the train log and the
    bar; every `eval_every` an evaluation goes to the eval log; every `checkpoint_every` a
    checkpoint is saved. A signal or `stop_after` saves and returns `interrupted`; a spent
    budget ends the run as reaching `steps` does, evaluated and saved (`budget_reached`).
    `progress_bar` None shows the bar on a terminal only; False never.
    """
    group, main = trainer.group, trainer.is_main
    if group.size() > 1 and not trainer.data_parallel:
        raise PixelsceneError(f"{trainer.desc} training does not run on several ranks")
    distributed.start(trainer.modules, trainer.optimizers, trainer.step, group)
    if main:
        _start_logs(trainer)
    hooks = _HOOKS.get() or Hooks()
    last_eval: dict[str, Any] | None = None
    evaluated_at: int | None = None

    def evaluate() -> dict[str, Any] | None:
        nonlocal evaluated_at
        evaluated_at = trainer.step
        if not main:
            return None
        metrics = trainer.evaluate()
        if metrics is None:
            return None
        row = {"step": trainer.step, **metrics, "elapsed_s": round(trainer.elapsed, 1)}
        common.append_jsonl(trainer.out_dir / trainer.eval_log, row)
        log.info("step %d eval: %s", trainer.step, json.dumps(row))
        return row

    if trainer.eval_at_start and trainer.step == 0:
        last_eval = evaluate()
    throughput = common.Throughput()
    bar = common.progress(
        plan.steps,
        initial=trainer.step,
        desc=trainer.desc,
        disable=progress_bar is False or not main,
    )
    last_train: dict[str, float] | None = None
    rate = 0.0
    step_times: list[float] = []

    def report() -> None:
        if hooks.on_progress is not None:
            hooks.on_progress(_progress(trainer, plan.steps, last_train, rate, last_eval))

    saved_at: int | None = None
    interrupted = budget_reached = False
    try:
        with common.stop_on_signals() as stop:
            while trainer.step < plan.steps:
                if distributed.any_rank(main and trainer.budget.reached(), group):
                    budget_reached = True
                    break
                batch = trainer.batch()
                t0 = time.perf_counter()
                last_train = trainer.update(batch)
                # All of the step now (weights and optimizer states, not only what update
                # evaluated), so that each rank runs the step's all-reduces in one order.
                mx.eval(
                    [m.parameters() for m in trainer.modules.values()],
                    [o.state for o in trainer.optimizers.values()],
                )
                dt = time.perf_counter() - t0
                trainer.elapsed += dt
                step_times.append(dt)
                rate = throughput.add(trainer.items_per_step)
                bar.update(1)
                step = trainer.step
                if main and (step % plan.log_every == 0 or step == 1):
                    bar.set_postfix(
                        {
                            **common.format_losses(last_train),
                            **trainer.status(),
                            f"{trainer.unit}/s": f"{rate:.1f}",
                        }
                    )
                    common.append_jsonl(
                        trainer.out_dir / trainer.train_log,
                        {"step": step, **last_train, f"{trainer.unit}_per_s": rate},
                    )
                    report()
                if main:
                    trainer.after_step()
                if step % plan.eval_every == 0:
                    last_eval = evaluate()
                    report()
                if plan.checkpoint_every and step % plan.checkpoint_every == 0:
                    trainer.save()
                    saved_at = step
                asked = bool(stop) or bool(hooks.should_stop and hooks.should_stop())
                if distributed.any_rank(asked, group) or step == stop_after:
                    interrupted = True
                    break
            if not interrupted and evaluated_at != trainer.step:
                last_eval = evaluate()
                saved_at = None  # an evaluation may change what a checkpoint holds
                report()
            if saved_at != trainer.step:
                trainer.save()
            # mlx.launch stops every rank once one exits with an error (130: interrupted),
            # so the others wait until rank 0 has written
            distributed.barrier(group)
    finally:
        bar.close()
        trainer.close()
    sec = float(np.median(step_times)) if step_times else float("nan")
    return TrainResult(trainer.step, interrupted, sec, last_eval, budget_reached, last_train)


def _progress(
    trainer: Trainer,
    total: int,
    losses: dict[str, float] | None,
    rate: float,
    last_eval: dict[str, Any] | None,
) -> Progress:
    eta = None
    if rate > 0:  # wall time per item over recent steps, data loading included
        eta = (total - trainer.step) * trainer.items_per_step / rate
        if trainer.budget.limit_s is not None:
            eta = min(eta, max(trainer.budget.limit_s - trainer.budget.spent_s, 0.0))
    grids = sorted((trainer.out_dir / "samples").glob("*.png"), key=lambda p: p.stat().st_mtime)
    return Progress(
        trainer.step, total, dict(losses or {}), rate, trainer.unit, eta, last_eval,
        grids[-1] if grids else None,
    )  # fmt: skip


def _start_logs(trainer: Trainer) -> None:
    """A new run starts its logs afresh; a resumed one forgets the rows written after its
    checkpoint (it redoes those steps)."""
    for name in (trainer.train_log, trainer.eval_log):
        path = trainer.out_dir / name
        if trainer.resumed:
            common.truncate_jsonl(path, trainer.step)
        else:
            path.unlink(missing_ok=True)
