"""`pixelscene grid -o grid.png`: a prompt list drawn as one labelled contact sheet.

Image i is the image `pixelscene generate PROMPT_i --seed SEED+i` writes (same model and
settings); the sheet is built at the images' size and upscaled whole, nearest neighbour.
Without --prompts the list is `pixelscene.prompts.SHOWCASE_PROMPTS`, the README's grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pixelscene.commands.generate import add_sampling_arguments

# Pillow refuses to open larger images (a decompression-bomb guard): keep sheets readable.
MAX_SHEET_PIXELS = 89_478_485


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, required=True, help="output PNG")
    parser.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE",
        help="one prompt a line, blank lines and # comments skipped (default: the 16 "
        "showcase prompts)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="image i of the list gets seed + i (default: 0)"
    )
    parser.add_argument(
        "--scale", type=int, default=2, help="nearest-neighbour upscale, 1..16 (default: 2)"
    )
    parser.add_argument(
        "--columns", type=int, default=4, help="images a row (default: 4, at most one a prompt)"
    )
    parser.add_argument(
        "--labels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each prompt under its image (default: on)",
    )
    add_sampling_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pixelscene import output
    from pixelscene.commands.generate import generate_images
    from pixelscene.data.canvas import H, W
    from pixelscene.errors import PixelsceneError
    from pixelscene.prompts import SHOWCASE_PROMPTS, read_prompt_file

    if args.columns < 1:
        raise PixelsceneError("--columns must be >= 1")
    output.check_scale(args.scale)
    output.check_output_path(args.output)
    prompts = read_prompt_file(args.prompts) if args.prompts else list(SHOWCASE_PROMPTS)
    columns = min(args.columns, len(prompts))
    cell = (H + (output.LABEL_H if args.labels else 0), W)
    height, width = (args.scale * n for n in output.sheet_shape(len(prompts), cell, columns))
    if height * width > MAX_SHEET_PIXELS:
        raise PixelsceneError(
            f"the grid would be {width}x{height} pixels, over {MAX_SHEET_PIXELS:,}: "
            "use fewer prompts or a smaller --scale"
        )

    scene, settings, images = generate_images(args, prompts)
    sheet = output.labelled_grid(
        [image.pixels for image in images], prompts if args.labels else None, columns
    )
    text = output.generation_metadata(
        prompt="",
        seed=args.seed,
        settings=settings,
        model_name=scene.name,
        model_version=scene.version,
    )
    del text["prompt"]
    text.update(prompts=prompts, columns=str(columns), scale=str(args.scale))
    output.save_png(args.output, sheet, scale=args.scale, metadata=text)
    print(f"wrote {args.output} ({len(prompts)} images, seeds {images[0].seed}..{images[-1].seed})")
    return 0
