"""`pixelscene train vqgan`: train (or resume) the VQGAN into a model folder."""

from __future__ import annotations

import argparse

from pixelscene.commands.arguments import add_run_arguments, run_and_report, run_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="preset name or YAML file (default: tiny)")
    parser.add_argument("--data", required=True, help="training dataset folder (images/ inside)")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pixelscene.train.stages import VqganRequest

    request = VqganRequest(data_dir=args.data, config=args.config, **run_options(args))
    return run_and_report(request, args)
