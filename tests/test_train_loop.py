"""The shared training loop and schedule, on a toy trainer: logs, evaluations, checkpoints,
interruption and exact resume, the time budget."""

import json

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest

from pixelscene.errors import PixelsceneError
from pixelscene.train import common, loop


class Toy(loop.Trainer):
    """Fits y = 2x with one weight; batch k is a function of (seed, k)."""

    desc = "toy"

    def __init__(self, out_dir, seed=0):
        super().__init__(common.prepare_out_dir(out_dir), seed)
        self.model = nn.Linear(1, 1, bias=False)
        self.model.weight = mx.zeros((1, 1))
        self.opt = optim.SGD(learning_rate=common.warmup_cosine(0.1, 2, 6))
        self.opt.init(self.model.trainable_parameters())
        self.modules, self.optimizers = {"toy": self.model}, {"toy": self.opt}
        self.evaluations = 0

    def batch(self):
        return np.random.default_rng([self.seed, self.step]).normal(size=(4, 1))

    def update(self, x):
        def loss_fn(model, x):
            return mx.mean(mx.square(model(x) - 2 * x))

        x = mx.array(x.astype(np.float32))
        loss, grads = nn.value_and_grad(self.model, loss_fn)(self.model, x)
        self.opt.update(self.model, grads)
        mx.eval(self.model.parameters(), self.opt.state)
        self.step += 1
        return {"loss": loss.item()}

    def evaluate(self):
        self.evaluations += 1
        return {"weight": self.model.weight.item()}

    def state(self):
        return {"evaluations": self.evaluations}

    def restore(self, meta, arrays):
        self.evaluations = meta["evaluations"]


PLAN = loop.Plan(steps=6, log_every=2, eval_every=3, checkpoint_every=2)


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def untimed(rows):
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "img_per_s")} for r in rows]


def test_a_run_logs_evaluates_and_checkpoints(tmp_path):
    toy = Toy(tmp_path)
    result = loop.run(toy, PLAN, progress_bar=False)
    assert result.step == 6 and not result.interrupted and not result.budget_reached
    assert [r["step"] for r in rows(tmp_path / "train.jsonl")] == [1, 2, 4, 6]
    assert [r["step"] for r in rows(tmp_path / "eval.jsonl")] == [3, 6]
    assert result.last_eval["step"] == 6 and result.last_eval["weight"] > 0.5
    assert result.last_train == {"loss": rows(tmp_path / "train.jsonl")[-1]["loss"]}
    meta = json.loads((tmp_path / "checkpoint" / "meta.json").read_text())
    assert {"step", "seed", "elapsed_s", "wall_s", "evaluations"} <= set(meta)
    assert meta["step"] == 6 and meta["evaluations"] == 2


def test_resume_is_exact_and_forgets_rows_past_the_checkpoint(tmp_path):
    straight = Toy(tmp_path / "straight")
    loop.run(straight, PLAN, progress_bar=False)
    first = Toy(tmp_path / "split")
    result = loop.run(first, PLAN, progress_bar=False, stop_after=3)
    assert result.interrupted and result.step == 3
    with (tmp_path / "split" / "train.jsonl").open("a") as f:  # a step that was lost
        f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")
    with pytest.raises(common.CheckpointError):
        Toy(tmp_path / "nowhere").start(True, None)
    again = Toy(tmp_path / "split")
    again.start(True, None)
    assert again.step == 3 and again.evaluations == 1
    loop.run(again, PLAN, progress_bar=False)
    for log in ("train.jsonl", "eval.jsonl"):
        a, b = rows(tmp_path / "straight" / log), rows(tmp_path / "split" / log)
        assert untimed(b) == untimed(a), log
    assert again.model.weight.item() == straight.model.weight.item()


def test_a_spent_budget_ends_the_run_evaluated_and_saved(tmp_path):
    toy = Toy(tmp_path)
    toy.start(False, max_minutes=1e-9)
    result = loop.run(toy, PLAN, progress_bar=False)
    assert result.budget_reached and not result.interrupted and result.step == 0
    assert result.last_eval["step"] == 0
    assert json.loads((tmp_path / "checkpoint" / "meta.json").read_text())["step"] == 0
    with pytest.raises(PixelsceneError, match="--resume"):
        common.resume_meta(tmp_path / "checkpoint", resume=False)


def test_hooks_hear_progress_and_stop_the_run_checkpointed(tmp_path):
    """A queue worker's part: each logged step and evaluation reported (step, total, losses,
    rate, ETA, the latest evaluation and sample grid); `should_stop` ends the run at that
    step with a checkpoint, as a signal would, and a resume goes on from it."""
    heard = []
    (tmp_path / "samples").mkdir(parents=True)
    (tmp_path / "samples" / "step_000001.png").write_bytes(b"png")
    hooks = loop.Hooks(should_stop=lambda: heard[-1].step >= 4, on_progress=heard.append)
    with loop.listening(hooks):
        result = loop.run(Toy(tmp_path), PLAN, progress_bar=False)
    assert result.interrupted and result.step == 4
    assert [(p.step, p.eval and p.eval["step"]) for p in heard] == [
        (1, None), (2, None), (3, 3), (4, 3)
    ]  # fmt: skip
    last = heard[-1]
    assert last.total == 6 and set(last.losses) == {"loss"} and last.unit == "img"
    assert last.items_per_s > 0 and last.eta_s is not None and last.eta_s > 0
    assert last.sample == tmp_path / "samples" / "step_000001.png"
    assert json.loads((tmp_path / "checkpoint" / "meta.json").read_text())["step"] == 4
    again = Toy(tmp_path)  # outside the block: no hooks, so it runs to the end
    again.start(True, None)
    assert again.step == 4 and loop.run(again, PLAN, progress_bar=False).step == 6


def schedule(fn, steps):
    return [float(fn(mx.array(s))) for s in steps]


def test_one_schedule_gives_each_trainers_learning_rates():
    steps = range(0, 12)
    # the VQGAN's, decoder's and tokenizer's: warm-up from one step's share, to 10%
    old = optim.join_schedules(
        [optim.linear_schedule(1e-3 / 3, 1e-3, 3), optim.cosine_decay(1e-3, 7, 1e-4)], [3]
    )
    assert schedule(common.warmup_cosine(1e-3, 3, 10), steps) == schedule(old, steps)
    # the transformer's: warm-up from 0, to 5%; no warm-up is plain cosine decay
    old = optim.join_schedules(
        [optim.linear_schedule(0.0, 1e-3, 2), optim.cosine_decay(1e-3, 8, 5e-5)], [2]
    )
    new = common.warmup_cosine(1e-3, 2, 10, final_frac=0.05, start_lr=0.0)
    assert schedule(new, steps) == schedule(old, steps)
    new = common.warmup_cosine(1e-3, 0, 10, final_frac=0.05, start_lr=0.0)
    assert schedule(new, steps) == schedule(optim.cosine_decay(1e-3, 10, 5e-5), steps)
    # the probe's: warm-up from 10%, to 2%
    old = optim.join_schedules(
        [optim.linear_schedule(2e-4, 2e-3, 1), optim.cosine_decay(2e-3, 9, 4e-5)], [1]
    )
    new = common.warmup_cosine(2e-3, 1, 10, final_frac=0.02, start_lr=2e-4)
    assert schedule(new, steps) == schedule(old, steps)
