"""`pixelscene decode codes.json -o out.png`: paint a saved code grid with the VQGAN decoder."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from pixelscene.commands.generate import add_output_arguments

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("codes", type=Path, help="a code grid written by `generate --codes`")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output PNG")
    parser.add_argument(
        "--model", default=None, metavar="DIR", help="model folder (default: bundled)"
    )
    add_output_arguments(parser, from_codes=True)


def run(args: argparse.Namespace) -> int:
    from pixelscene import output
    from pixelscene.pipeline import PixelScene

    codes, meta = output.read_codes(args.codes)
    palette = args.palette if args.palette is not None else meta.get("palette") or "none"
    scale = args.scale if args.scale is not None else meta.get("scale") or 1
    output.check_scale(scale)
    output.check_output_path(args.output)
    output.check_palette_spec(palette)
    scene = PixelScene.load(args.model)
    if meta.get("model_version") and meta["model_version"] != scene.version:
        log.warning(
            "%s was made by model %s but this is %s: the image will differ",
            args.codes,
            meta["model_version"],
            scene.version,
        )
    if codes.size == math.prod(scene.codes_shape):  # a token row is written as one row
        codes = codes.reshape(scene.codes_shape)
    pixels = scene.decode_codes(codes)
    settings = meta.get("settings") or {}
    text = output.generation_metadata(
        prompt=meta.get("prompt") or "",
        seed=meta.get("seed"),
        settings=settings,
        model_name=scene.name,
        model_version=scene.version,
    )
    text["palette"] = palette
    text["scale"] = str(scale)
    text["decoded_from"] = args.codes.name
    output.save_png(args.output, pixels, palette_spec=palette, scale=scale, metadata=text)
    print(f"wrote {args.output}")
    return 0
