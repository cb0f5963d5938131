"""`pixelscene synth OUT_DIR`: render a captioned synthetic pixel-art dataset of scenes, or
`--source patterns`: tiles, sprites, UI and dithering for training the image tokenizer."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from pixelscene.errors import PixelsceneError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path, help="output folder (images/, *.jsonl)")
    parser.add_argument("--count", type=int, default=2000, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument(
        "--split",
        choices=("train", "test", "all"),
        default="train",
        help="train: seen attribute combinations; test: held-out combinations only (scenes)",
    )
    parser.add_argument(
        "--source",
        choices=("scenes", "patterns"),
        default="scenes",
        help="scenes: captioned landscapes; patterns: varied pixel art (tilemaps, sprites, UI, "
        "dithering) with one plain caption each, for the image tokenizer",
    )
    parser.add_argument(
        "--captions-per-image", type=int, default=3, help="captions per image (scenes)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes")


def run(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise PixelsceneError("--count must be at least 1")
    if args.captions_per_image < 1:
        raise PixelsceneError("--captions-per-image must be at least 1")
    if args.workers < 1:
        raise PixelsceneError("--workers must be at least 1")
    if args.seed < 0:
        raise PixelsceneError("--seed must be non-negative")
    if args.source == "patterns" and args.split != "train":
        raise PixelsceneError("--split picks scene attributes; patterns have none")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise PixelsceneError(f"{args.out_dir} exists and is not a folder")
    from tqdm import tqdm

    from pixelscene.data.synth import write_dataset

    start = time.perf_counter()
    with tqdm(total=args.count, unit="img", disable=None) as bar:
        write_dataset(
            args.out_dir,
            args.count,
            args.seed,
            split=args.split,
            captions=args.captions_per_image,
            workers=args.workers,
            progress=bar.update,
            source=args.source,
        )
    elapsed = time.perf_counter() - start
    what = args.split if args.source == "scenes" else "pattern"
    log.info(
        "wrote %d %s images to %s in %.1fs (%.1f images/s)",
        args.count, what, args.out_dir, elapsed, args.count / elapsed,
    )  # fmt: skip
    return 0
