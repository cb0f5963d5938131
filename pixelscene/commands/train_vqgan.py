"""`pixelscene train vqgan`: train (or resume) the VQGAN into a model folder."""

from __future__ import annotations

import argparse

from pixelscene.commands.arguments import add_run_arguments, report, run_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="preset name or YAML file (default: tiny)")
    parser.add_argument("--data", required=True, help="training dataset folder (images/ inside)")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pixelscene.config import load_config
    from pixelscene.train.vqgan import train_vqgan

    options = run_options(args)
    cfg = None if args.resume else load_config(args.config)  # a ConfigError is one line
    return report(train_vqgan(cfg, args.data, args.out, **options))
