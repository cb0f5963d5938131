"""`pixelscene eval vqgan`: reconstruction PSNR, patch-mean references and codebook usage."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model folder (default: the bundled model)")
    parser.add_argument("--data", required=True, help="folder of images (images/ inside or not)")
    parser.add_argument("--limit", type=int, help="measure only the first N images")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from pixelscene.data.datasets import ImageDataset
    from pixelscene.errors import DataError, PixelsceneError
    from pixelscene.eval.vqgan_metrics import evaluate_vqgan
    from pixelscene.vqgan import load_vqgan

    if args.limit is not None and args.limit <= 0:
        raise PixelsceneError("--limit must be positive")
    if args.batch_size <= 0:
        raise PixelsceneError("--batch-size must be positive")
    model = load_vqgan(args.model)
    dataset = ImageDataset(args.data)
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    skipped: list[str] = []

    def images():
        for i in range(n):
            try:
                yield dataset.load_uint8(i)
            except DataError as e:
                skipped.append(str(e))

    result = evaluate_vqgan(model, images(), batch_size=args.batch_size)
    if result["images"] == 0:
        why = f" ({len(skipped)} unreadable, first: {skipped[0]})" if skipped else ""
        raise PixelsceneError(f"{args.data}: no readable images{why}")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"images          {result['images']}")
        print(f"psnr            {result['psnr']:.2f} dB")
        print(f"psnr_patch16    {result['psnr_patch16']:.2f} dB  (16x16 patch means)")
        print(f"psnr_patch4     {result['psnr_patch4']:.2f} dB  (4x4 patch means)")
        print(f"codebook_usage  {result['codebook_usage']:.3f}")
        print(f"perplexity      {result['perplexity']:.1f}")
    if skipped:
        print(
            f"pixelscene: skipped {len(skipped)} unreadable image(s): {skipped[0]}", file=sys.stderr
        )
    return 0
