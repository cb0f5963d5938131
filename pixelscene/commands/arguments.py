"""What the commands share: argument types (argparse reports their errors as usage errors),
and the train commands' run flags, the stage run and its one-line report."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixelscene.train.stages import StageRequest


def _items(text: str, parse: Callable[[str], object], what: str) -> list:
    """Comma-separated values parsed one by one; at least one."""
    try:
        values = [parse(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one of the {what}")
    return values


def float_list(text: str) -> list[float]:
    """Comma-separated numbers, at least one."""
    return _items(text, float, "numbers")


def positive_int_list(text: str) -> list[int]:
    """Comma-separated whole numbers >= 1, at least one."""
    values = _items(text, int, "whole numbers")
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return values


def name_list(text: str) -> list[str]:
    """Comma-separated names, at least one."""
    return _items(text, str, "names")


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    out_help: str = "model folder to write (checkpoint/ inside)",
    steps_help: str = "total steps (overrides the config; extends on resume)",
    eval_help: str = "held-out dataset folder for evaluation",
    eval_required: bool = False,
    resumable: bool = True,
) -> None:
    """The flags of every `pixelscene train ...`: --out, --eval-data, --seed, --no-progress,
    --max-minutes, and where the run can resume --steps and --resume."""
    parser.epilog = (
        "Under `mlx.launch -n N ...` the run trains data-parallel on N ranks: batch sizes "
        "are the global batch (each rank takes 1/N of it) and rank 0 alone writes; see "
        "docs/distributed.md."
    )
    parser.add_argument("--out", required=True, help=out_help)
    if resumable:
        parser.add_argument("--steps", type=int, help=steps_help)
        parser.add_argument(
            "--resume", action="store_true", help="continue the checkpoint in --out exactly"
        )
    parser.add_argument("--eval-data", required=eval_required, help=eval_help)
    parser.add_argument("--seed", type=int, default=0, help="data and init seed (new runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop, evaluate and export once the run (resumes included) has trained M minutes",
    )


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The stage-request fields of `add_run_arguments`'s flags (the resumable ones included
    if the command has them); --steps must be positive."""
    from pixelscene.errors import PixelsceneError

    options: dict[str, Any] = {
        "out_dir": args.out,
        "eval_dir": args.eval_data,
        "seed": args.seed,
        "max_minutes": args.max_minutes,
    }
    if hasattr(args, "resume"):
        if args.steps is not None and args.steps <= 0:
            raise PixelsceneError("--steps must be positive")
        options.update(steps=args.steps, resume=args.resume)
    return options


def run_and_report(request: StageRequest, args: argparse.Namespace) -> int:
    """Run a stage request (with a progress bar unless --no-progress) and report it; under
    `mlx.launch` rank 0 reports for all."""
    from pixelscene.train import distributed
    from pixelscene.train.stages import run_stage

    group = distributed.init()
    result = run_stage(request, progress=False if args.no_progress else None)
    status = report(result, show=group.rank() == 0)
    distributed.barrier(group)  # rank 0 has reported before any rank exits
    return status


def report(result: Any, show: bool = True) -> int:
    """Print a trainer's TrainResult as one JSON line (if `show`); exit status 130 when
    interrupted (a spent --max-minutes budget is a normal end: 0)."""
    from pixelscene.train.stages import result_summary

    if show:
        print(json.dumps(result_summary(result)), flush=True)
    return 130 if result.interrupted else 0
