"""`pixelscene train probe`: train the attribute probe that scores prompt adherence."""

from __future__ import annotations

import argparse

from pixelscene.commands.arguments import add_run_arguments, run_and_report, run_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        action="append",
        help="synthetic training set (pixelscene synth); repeat to train on several",
    )
    add_run_arguments(
        parser,
        out_help="probe folder to write",
        eval_help="held-out synthetic set (e.g. synth --split test)",
        eval_required=True,
        resumable=False,
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per step (over all ranks)"
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument(
        "--channels",
        default="32,64,128",
        help="widths of the three convolution stages (smaller trains faster)",
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=2,
        choices=(1, 2, 4),
        help="average-pool images by this factor before the probe (2: 100x160)",
    )
    parser.add_argument(
        "--degrade",
        type=float,
        default=0.5,
        help="fraction of training images blurred like a VQGAN's output (0 to 1)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="keep decoded, pooled images in an npz here so a second run skips decoding",
    )
    parser.add_argument("--limit", type=int, default=None, help="use at most N training images")
    parser.add_argument("--eval-limit", type=int, default=None, help="use at most N eval images")
    parser.add_argument(
        "--vqgan-model",
        default=None,
        metavar="DIR",
        help="also measure the probe on held-out images passed through this model's VQGAN",
    )
    parser.add_argument(
        "--round-trip-limit",
        type=int,
        default=200,
        help="held-out images to measure after a VQGAN round trip (about 0.3 s each)",
    )
    parser.add_argument(
        "--train-on-round-trip",
        action="store_true",
        help="also train on the training images' VQGAN reconstructions (slow)",
    )
    parser.add_argument(
        "--no-maps",
        dest="maps",
        action="store_false",
        help="no auxiliary sprite maps (by default the probe also learns, per 16x16 cell, "
        "which landmark and vegetation the renderer drew there: it learns where to look)",
    )
    parser.add_argument(
        "--map-weight", type=float, default=1.0, help="weight of the sprite-map loss"
    )
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="DIR",
        help="start from this probe folder's weights (its channels and sprite maps; a warm "
        "start with this run's schedule)",
    )


def run(args: argparse.Namespace) -> int:
    from pixelscene.errors import PixelsceneError
    from pixelscene.train.stages import ProbeRequest

    if args.epochs < 1 or args.batch_size < 1:
        raise PixelsceneError("--epochs and --batch-size must be >= 1")
    if not 0.0 <= args.degrade <= 1.0:
        raise PixelsceneError(f"--degrade must be between 0 and 1, got {args.degrade}")
    try:
        channels = [int(c) for c in args.channels.split(",")]
    except ValueError:
        channels = []
    if len(channels) != 3 or min(channels) < 1:
        raise PixelsceneError(f"--channels must be three positive integers, got {args.channels!r}")
    request = ProbeRequest(
        data_dir=args.data[0] if len(args.data) == 1 else args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        channels=tuple(channels),
        pool=args.pool,
        degrade=args.degrade,
        cache_dir=args.cache_dir,
        limit=args.limit,
        eval_limit=args.eval_limit,
        vqgan_dir=args.vqgan_model,
        round_trip_limit=args.round_trip_limit,
        train_on_round_trip=args.train_on_round_trip,
        maps=args.maps,
        map_weight=args.map_weight,
        init_from=args.init_from,
        **run_options(args),
    )
    return run_and_report(request, args)
