"""`pixelscene train decoder`: fine-tune a VQGAN's decoder on whole images, codes unchanged."""

from __future__ import annotations

import argparse

from pixelscene.commands.arguments import add_run_arguments, run_and_report, run_options
from pixelscene.train.decoder import DecoderTuneSettings

_DEFAULTS = DecoderTuneSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="model folder whose VQGAN to start from (default: the bundled model)"
    )
    parser.add_argument(
        "--data", required=True, help="captioned dataset folder (its token cache is built once)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=_DEFAULTS.batch_size,
        help="whole images per step (over all ranks)",
    )
    parser.add_argument(
        "--lr", type=float, default=_DEFAULTS.learning_rate, help="peak learning rate"
    )
    parser.add_argument(
        "--l1-weight", type=float, default=_DEFAULTS.l1_weight, help="weight of the L1 loss"
    )
    parser.add_argument(
        "--l2-weight", type=float, default=_DEFAULTS.l2_weight, help="weight of the L2 loss"
    )
    parser.add_argument(
        "--gan-weight",
        type=float,
        default=_DEFAULTS.gan_weight,
        help="hinge GAN weight (adaptive, as in VQGAN training); 0 = no GAN (default)",
    )
    parser.add_argument(
        "--disc-start",
        type=int,
        default=_DEFAULTS.disc_start,
        help="steps before the GAN term starts",
    )
    parser.add_argument(
        "--eval-every", type=int, default=_DEFAULTS.eval_every, help="steps between evaluations"
    )
    add_run_arguments(
        parser,
        out_help="new model folder (checkpoint/ inside)",
        steps_help=f"total steps (default {_DEFAULTS.steps}; extends on resume)",
    )


def run(args: argparse.Namespace) -> int:
    from pixelscene.train.stages import DecoderRequest

    request = DecoderRequest(
        data_dir=args.data,
        model_dir=args.model,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        l1_weight=args.l1_weight,
        l2_weight=args.l2_weight,
        gan_weight=args.gan_weight,
        disc_start=args.disc_start,
        eval_every=args.eval_every,
        **run_options(args),
    )
    return run_and_report(request, args)
