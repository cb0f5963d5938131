"""`pixelscene train transformer`: train the text-conditioned code writer on a token cache."""

from __future__ import annotations

import argparse

from pixelscene.commands.arguments import add_run_arguments, run_and_report, run_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="preset name or YAML file (default tiny)")
    parser.add_argument("--data", required=True, help="dataset folder (images/ + captions.jsonl)")
    parser.add_argument(
        "--vqgan",
        required=True,
        metavar="MODEL_DIR",
        help="model folder of the image tokenizer whose codes it writes (a VQGAN, or the "
        "categorical tokenizer: then a palette and a 26x40 grid)",
    )
    parser.add_argument(
        "--init-from",
        metavar="MODEL_DIR",
        help="start from this model folder's transformer weights (a fine-tune: new optimizer "
        "and schedule; the config's architecture must match)",
    )
    add_run_arguments(
        parser,
        out_help="model folder to write (may be --vqgan's; checkpoint_transformer/ inside)",
        steps_help="total steps (default: the config's; extends on resume)",
        eval_help="held-out dataset folder for the eval loss",
    )


def run(args: argparse.Namespace) -> int:
    from pixelscene.train.stages import TransformerRequest

    request = TransformerRequest(
        data_dir=args.data,
        vqgan_dir=args.vqgan,
        config=args.config,
        init_from=args.init_from,
        **run_options(args),
    )
    return run_and_report(request, args)
