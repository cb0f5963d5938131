"""`pixelscene train decoder`: fine-tune a VQGAN's decoder on whole images, codes unchanged."""

from __future__ import annotations

import argparse

from pixelscene.train.decoder import DecoderTuneSettings

_DEFAULTS = DecoderTuneSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="model folder whose VQGAN to start from (default: the bundled model)"
    )
    parser.add_argument(
        "--data", required=True, help="captioned dataset folder (its token cache is built once)"
    )
    parser.add_argument("--out", required=True, help="new model folder (checkpoint/ inside)")
    parser.add_argument(
        "--steps", type=int, help=f"total steps (default {_DEFAULTS.steps}; extends on resume)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=_DEFAULTS.batch_size, help="whole images per step"
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
    parser.add_argument("--eval-data", help="held-out dataset folder for evaluation")
    parser.add_argument(
        "--eval-every", type=int, default=_DEFAULTS.eval_every, help="steps between evaluations"
    )
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoint exactly")
    parser.add_argument("--seed", type=int, default=0, help="data order seed (new runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop, checkpoint and export once the run (resumes included) has trained M minutes",
    )


def run(args: argparse.Namespace) -> int:
    from pixelscene.commands.train_vqgan import report
    from pixelscene.errors import PixelsceneError
    from pixelscene.train.decoder import finetune_decoder

    if args.steps is not None and args.steps <= 0:
        raise PixelsceneError("--steps must be positive")
    settings = DecoderTuneSettings(
        steps=args.steps or _DEFAULTS.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        l1_weight=args.l1_weight,
        l2_weight=args.l2_weight,
        gan_weight=args.gan_weight,
        disc_start=args.disc_start,
        seed=args.seed,
        eval_every=args.eval_every,
    )
    result = finetune_decoder(
        args.model,
        args.data,
        args.out,
        settings,
        resume=args.resume,
        steps=args.steps,
        eval_dir=args.eval_data,
        progress_bar=False if args.no_progress else None,
        max_minutes=args.max_minutes,
    )
    return report(result)
