"""`pixelscene train tokenizer`: train (or resume) the categorical image tokenizer."""

from __future__ import annotations

import argparse

from pixelscene.commands.arguments import add_run_arguments, run_and_report, run_options


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
    from pixelscene.errors import PixelsceneError
    from pixelscene.train.stages import TokenizerRequest

    options = run_options(args)
    weights = None
    if args.data_weights:
        try:
            weights = [float(w) for w in args.data_weights.split(",")]
        except ValueError:
            raise PixelsceneError(f"--data-weights: not numbers: {args.data_weights}") from None
    request = TokenizerRequest(
        data_dirs=args.data,
        data_weights=weights,
        config=args.config,
        init_from=args.init_from,
        **options,
    )
    return run_and_report(request, args)
