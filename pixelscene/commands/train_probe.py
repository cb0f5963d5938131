"""`pixelscene train probe`: train the attribute probe that scores prompt adherence."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="synthetic training set (pixelscene synth)")
    parser.add_argument(
        "--eval-data", required=True, help="held-out synthetic set (e.g. synth --split test)"
    )
    parser.add_argument("--out", required=True, help="probe folder to write")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0)
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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pixelscene.errors import PixelsceneError
    from pixelscene.eval.probe import train_and_save

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
    bar = None

    def progress(done: int, total: int, loss: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="probe", unit="step")
        bar.update(1)
        if done % 10 == 0 or done == total:
            bar.set_postfix(loss=f"{loss:.3f}")

    info = train_and_save(
        args.data,
        args.eval_data,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        limit=args.limit,
        eval_limit=args.eval_limit,
        vqgan_dir=args.vqgan_model,
        round_trip_limit=args.round_trip_limit,
        train_on_round_trip=args.train_on_round_trip,
        channels=channels,
        pool=args.pool,
        degrade=args.degrade,
        cache_dir=args.cache_dir,
        progress=progress,
    )
    if bar is not None:
        bar.close()
    report = {k: info[k] for k in info if k.startswith("eval_accuracy")}
    report.update(
        train_images=info["train_images"],
        eval_images=info["eval_images"],
        train_seconds=info["train_seconds"],
        out=args.out,
    )
    print(json.dumps(report, indent=2))
    return 0
