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
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--channels",
        default="48,64,128",
        help="widths of the three feature layers (smaller trains faster)",
    )
    parser.add_argument("--limit", type=int, default=None, help="use at most N training images")
    parser.add_argument("--eval-limit", type=int, default=None, help="use at most N eval images")
    parser.add_argument(
        "--vqgan-model",
        default=None,
        metavar="DIR",
        help="also train on (and measure) images passed through this model's VQGAN",
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pixelscene.errors import PixelsceneError
    from pixelscene.eval.probe import train_and_save

    if args.epochs < 1 or args.batch_size < 1:
        raise PixelsceneError("--epochs and --batch-size must be >= 1")
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
        channels=channels,
        progress=progress,
    )
    if bar is not None:
        bar.close()
    report = {k: info[k] for k in info if k.startswith("eval_accuracy")}
    report.update(train_images=info["train_images"], eval_images=info["eval_images"], out=args.out)
    print(json.dumps(report, indent=2))
    return 0
