"""`pixelscene train vqgan`: train (or resume) the VQGAN into a model folder."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="preset name or YAML file (default: tiny)")
    parser.add_argument("--data", required=True, help="training dataset folder (images/ inside)")
    add_run_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--out, --steps, --resume, --eval-data, --seed, --no-progress, --max-minutes."""
    parser.add_argument("--out", required=True, help="model folder to write (checkpoint/ inside)")
    parser.add_argument(
        "--steps", type=int, help="total steps (overrides the config; extends on resume)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint exactly"
    )
    parser.add_argument("--eval-data", help="held-out dataset folder for evaluation")
    parser.add_argument("--seed", type=int, default=0, help="data and init seed (new runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop, checkpoint and export once the run (resumes included) has trained M minutes",
    )


def run(args: argparse.Namespace) -> int:
    from pixelscene.config import load_config
    from pixelscene.errors import PixelsceneError
    from pixelscene.train.vqgan import train_vqgan

    if args.steps is not None and args.steps <= 0:
        raise PixelsceneError("--steps must be positive")
    cfg = None if args.resume else load_config(args.config)  # a ConfigError is one line
    result = train_vqgan(
        cfg,
        args.data,
        args.out,
        steps=args.steps,
        resume=args.resume,
        eval_dir=args.eval_data,
        seed=args.seed,
        progress_bar=False if args.no_progress else None,
        max_minutes=args.max_minutes,
    )
    return report(result)


def report(result) -> int:
    """Print a trainer's TrainResult as one JSON line; exit status 130 when interrupted (a
    spent --max-minutes budget is a normal end: 0)."""
    summary = {
        "step": result.step,
        "interrupted": result.interrupted,
        "seconds_per_step": round(result.seconds_per_step, 4),
        "eval": result.last_eval,
        "budget_reached": result.budget_reached,
    }
    print(json.dumps(summary))
    return 130 if result.interrupted else 0
