"""`pixelscene generate PROMPT -o out.png`: generate pixel-art images from a prompt."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixelscene.pipeline import GeneratedImage, PixelScene


def add_output_arguments(parser: argparse.ArgumentParser, from_codes: bool = False) -> None:
    """--palette and --scale, shared by generate and decode (where they default to what
    the code file says its PNG was written with)."""
    also = "; default: as the code file says, else " if from_codes else "; default: "
    parser.add_argument(
        "--palette",
        default=None if from_codes else "none",
        metavar="SPEC",
        help="none | vga | auto:N (2..256) | a .gpl/.pal/.hex palette file" + also + "none",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=None if from_codes else 1,
        help="nearest-neighbour upscale factor, 1..16" + also + "1",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and sampler flags of the commands that generate (generate, grid)."""
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's")
    parser.add_argument("--top-k", type=int, default=None, help="0 disables; default: the model's")
    parser.add_argument("--top-p", type=float, default=None, help="default: the model's")
    parser.add_argument(
        "--cfg",
        type=float,
        default=None,
        help="classifier-free guidance scale; default: the model's",
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="NAME_OR_DIR",
        help="model folder, or the name of a bundled one (default: the bundled tiny)",
    )
    parser.add_argument("--batch", type=int, default=8, help="images sampled together")
    parser.add_argument(
        "--engine",
        choices=("auto", "cpu", "mlx"),
        default="auto",
        help="sampling engine; auto: cpu on MLX's CPU device, mlx on a GPU (default: auto)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what to draw, e.g. 'a castle at sunset'")
    parser.add_argument("-o", "--output", type=Path, default=Path("out.png"), help="output PNG")
    parser.add_argument(
        "-n", "--num", type=int, default=1, help="number of images (-n 4 writes out_1.png..)"
    )
    parser.add_argument("--seed", type=int, default=None, help="base seed (image j: seed + j)")
    add_sampling_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument(
        "--codes", action="store_true", help="also write the code grid as OUT.json (for decode)"
    )


def generate_images(
    args: argparse.Namespace, prompts: list[str], n: int = 1
) -> tuple[PixelScene, dict[str, Any], list[GeneratedImage]]:
    """Load --model and sample n images of each prompt from --seed (image j of prompt i:
    seed + i*n + j), with a progress bar on stderr.

    Returns:
        (the loaded PixelScene, the sampler settings used, the images in prompt-major order)
    """
    from tqdm import tqdm

    from pixelscene.errors import PixelsceneError
    from pixelscene.model_io import model_dir_or_bundled
    from pixelscene.pipeline import PixelScene

    if args.batch < 1:
        raise PixelsceneError("--batch must be >= 1")
    scene = PixelScene.load(model_dir_or_bundled(args.model), engine=args.engine)
    settings = scene.resolve_settings(args.temperature, args.top_k, args.top_p, args.cfg)
    scene.warm_up()  # before the progress bar: the cpu engine's first run on a machine compiles
    steps = scene.iter_generate(prompts, n=n, seed=args.seed, batch_size=args.batch, **settings)
    images = None
    total = len(prompts) * n * math.prod(scene.codes_shape)
    with tqdm(total=total, unit="code", desc="generating", disable=None) as bar:
        for step in steps:
            bar.total = step.total
            bar.update(step.done - bar.n)
            images = step.images
    return scene, settings, images


def run(args: argparse.Namespace) -> int:
    from pixelscene import output
    from pixelscene.errors import PixelsceneError
    from pixelscene.prompts import prompt_problem

    if args.num < 1:
        raise PixelsceneError("-n must be >= 1")
    problem = prompt_problem(args.prompt)
    if problem:
        raise PixelsceneError(problem)
    output.check_scale(args.scale)
    output.check_output_path(args.output)
    output.check_palette_spec(args.palette)

    scene, settings, images = generate_images(args, [args.prompt], n=args.num)
    for path, image in zip(output.numbered_paths(args.output, args.num), images, strict=True):
        png, codes = output.save_generated(
            path,
            image,
            model_name=scene.name,
            model_version=scene.version,
            settings=settings,
            palette=args.palette,
            scale=args.scale,
            codes_path=path.with_suffix(".json") if args.codes else None,
        )
        print(f"wrote {png} (seed {image.seed})")
        if codes is not None:
            print(f"wrote {codes}")
    return 0
