"""`pixelscene eval vqgan`: how exactly an image tokenizer reconstructs images, beside trivial
patch references, over sprite pixels where the data is a `pixelscene synth` dataset."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model folder (default: the bundled model)")
    parser.add_argument("--data", required=True, help="folder of images (images/ inside or not)")
    parser.add_argument("--limit", type=int, help="measure only the first N images")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from pixelscene.data.datasets import ImageDataset
    from pixelscene.data.sprites import scene_sprites, synth_records
    from pixelscene.errors import DataError, PixelsceneError
    from pixelscene.eval.vqgan_metrics import evaluate_vqgan
    from pixelscene.image_tokenizers import load_tokenizer

    if args.limit is not None and args.limit <= 0:
        raise PixelsceneError("--limit must be positive")
    if args.batch_size <= 0:
        raise PixelsceneError("--batch-size must be positive")
    model = load_tokenizer(args.model)
    dataset = ImageDataset(args.data)
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    skipped: list[str] = []
    # Sprite masks come from re-rendering synth records (DATA/attributes.jsonl beside images/);
    # the first image without a record that re-renders to it turns the sprite figures off.
    no_sprites: str | None = None
    records: dict[str, dict] = {}
    root = Path(args.data)
    if root.name == "images" and not (root / "attributes.jsonl").is_file():
        root = root.parent  # --data named a dataset's images/ folder
    try:
        records = synth_records(root)
    except DataError as e:
        no_sprites = str(e)

    def sprite_mask(path: Path):
        nonlocal no_sprites
        if no_sprites is not None:
            return None
        try:
            if path.name not in records:
                raise DataError(f"{path}: no record in attributes.jsonl")
            return scene_sprites(records[path.name], path)
        except DataError as e:
            no_sprites = str(e)
            return None

    def images():
        for i in range(n):
            try:
                image = dataset.load_uint8(i)
            except DataError as e:
                skipped.append(str(e))
                continue
            yield image, sprite_mask(dataset.paths[i])

    result = evaluate_vqgan(model, images(), batch_size=args.batch_size)
    if result["images"] == 0:
        why = f" ({len(skipped)} unreadable, first: {skipped[0]})" if skipped else ""
        raise PixelsceneError(f"{args.data}: no readable images{why}")
    if no_sprites is None and result["psnr_sprites"] is None:
        no_sprites = "no image has sprite pixels"
    if args.json:
        print(json.dumps(result))
        if no_sprites:
            print(f"pixelscene: sprite figures are null: {no_sprites}", file=sys.stderr)
    else:
        _print_text(result, no_sprites)
    if skipped:
        print(
            f"pixelscene: skipped {len(skipped)} unreadable image(s): {skipped[0]}", file=sys.stderr
        )
    return 0


def _print_text(r: dict, no_sprites: str | None) -> None:
    def sprites(key: str, fmt: str) -> str:
        return fmt.format(r[key]) if r[key] is not None else f"n/a  ({no_sprites})"

    print(f"images                  {r['images']}")
    print(f"psnr                    {r['psnr']:.2f} dB")
    for k in (16, 8, 4):
        print(f"psnr_patch{k:<2}            {r[f'psnr_patch{k}']:.2f} dB  ({k}x{k} patch means)")
    print(f"pixel_accuracy          {r['pixel_accuracy']:.4f}  (exact pixels)")
    for k in (16, 8, 4):
        line = f"{r[f'pixel_accuracy_mode{k}']:.4f}  ({k}x{k} patches in their commonest colour)"
        print(f"pixel_accuracy_mode{k:<2}   {line}")
    print(f"pixel_accuracy_sprites  {sprites('pixel_accuracy_sprites', '{:.4f}')}")
    print(f"psnr_sprites            {sprites('psnr_sprites', '{:.2f} dB')}")
    print(f"distinct_colours        {r['distinct_colours']:.1f}  (mean per reconstruction)")
    print(f"off_grid_pixels         {r['off_grid_pixels']}  (channels off the VGA DAC levels)")
    print(f"codebook_usage          {r['codebook_usage']:.3f}")
    print(f"perplexity              {r['perplexity']:.1f}")
