"""`pixelscene train tokenizer`: train (or resume) the categorical image tokenizer."""

from __future__ import annotations

import argparse

from pixelscene.commands.arguments import add_run_arguments, report, run_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="pixel", help="preset name or YAML (default: pixel)")
    parser.add_argument(
        "--data",
        required=True,
        action="append",
        help="training image folder (images/ inside); repeat to mix several",
    )
    parser.add_argument(
        "--data-weights", help="comma-separated sampling weights, one per --data (default: equal)"
    )
    parser.add_argument(
        "--init-from", help="start a new run from this model folder's weights (those that fit)"
    )
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pixelscene.config import load_config
    from pixelscene.errors import PixelsceneError
    from pixelscene.train.imagetok import train_tokenizer

    options = run_options(args)
    weights = None
    if args.data_weights:
        try:
            weights = [float(w) for w in args.data_weights.split(",")]
        except ValueError:
            raise PixelsceneError(f"--data-weights: not numbers: {args.data_weights}") from None
    cfg = None if args.resume else load_config(args.config)
    result = train_tokenizer(
        cfg, args.data, args.out, data_weights=weights, init_from=args.init_from, **options
    )
    return report(result)
