"""`pixelscene train transformer`: train the text-conditioned code writer on a token cache."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="preset name or YAML file (default tiny)")
    parser.add_argument("--data", required=True, help="dataset folder (images/ + captions.jsonl)")
    parser.add_argument("--vqgan", required=True, help="model folder holding vqgan.safetensors")
    parser.add_argument("--out", required=True, help="model folder to write (may be --vqgan's)")
    parser.add_argument("--eval-data", help="held-out dataset folder for the eval loss")
    parser.add_argument("--steps", type=int, help="total steps (default: the config's)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --out"
    )
    parser.add_argument(
        "--init-from",
        metavar="MODEL_DIR",
        help="start from this model folder's transformer weights (a fine-tune: new optimizer "
        "and schedule; the config's architecture must match)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop, checkpoint and export once the run (resumes included) has trained M minutes",
    )


def run(args: argparse.Namespace) -> int:
    from pixelscene.train.transformer import train_transformer

    result = train_transformer(
        args.config,
        args.data,
        args.vqgan,
        args.out,
        eval_dir=args.eval_data,
        steps=args.steps,
        resume=args.resume,
        seed=args.seed,
        progress=not args.no_progress,
        init_from=args.init_from,
        max_minutes=args.max_minutes,
    )
    held = f", held-out loss {result.eval_loss:.4f}" if result.eval_loss is not None else ""
    print(
        f"step {result.step}: train loss {result.train_loss:.4f}{held}, "
        f"{result.tokens_per_s:,.0f} tokens/s -> {args.out}"
        + (" (time budget reached)" if result.budget_reached else "")
    )
    return 130 if result.interrupted else 0
