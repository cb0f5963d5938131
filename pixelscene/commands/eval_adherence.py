"""`pixelscene eval adherence`: measure prompt adherence on held-out attribute combinations."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pixelscene.commands.arguments import float_list
from pixelscene.errors import PixelsceneError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--model", default=None, metavar="DIR", help="model folder (default: bundled)"
    )
    parser.add_argument(
        "--probe", default=None, metavar="DIR", help="probe folder (default: bundled)"
    )
    parser.add_argument(
        "--prompts", type=int, default=200, help="held-out prompts (>= 200 to report)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="fixes the prompts and the sampling seeds"
    )
    parser.add_argument("--cfg-grid", type=float_list, default=[1.0, 2.0, 3.0, 5.0])
    parser.add_argument("--temperature-grid", type=float_list, default=[0.8, 1.0])
    parser.add_argument(
        "--grid-prompts", type=int, default=64, help="prompts per (cfg, temperature) table cell"
    )
    parser.add_argument(
        "--paraphrases",
        type=int,
        default=120,
        help="prompts of the paraphrase set (words the captions never use); 0 skips it",
    )
    parser.add_argument("--diversity-prompts", type=int, default=8)
    parser.add_argument("--diversity-seeds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32, help="images sampled together")
    parser.add_argument("--grid", default=None, metavar="PNG", help="write 16 prompts' images here")
    parser.add_argument(
        "--probe-data",
        default=None,
        metavar="DIR",
        help="measure the probe's accuracy on these held-out real scenes (a `pixelscene synth "
        "--split test` folder) instead of reporting the figure stored with it",
    )
    parser.add_argument(
        "--probe-limit", type=int, default=1000, help="scenes of --probe-data to measure on"
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pixelscene.data.attribute_data import load_attribute_data
    from pixelscene.eval.adherence import evaluate, format_report
    from pixelscene.eval.probe import accuracy, load_probe
    from pixelscene.pipeline import PixelScene

    if args.prompts < 1 or args.batch < 1 or args.grid_prompts < 0:
        raise PixelsceneError("--prompts and --batch must be >= 1, --grid-prompts >= 0")
    if args.paraphrases < 0:
        raise PixelsceneError("--paraphrases must be >= 0")
    if args.diversity_prompts < 0 or args.diversity_seeds < 2:
        raise PixelsceneError("--diversity-seeds must be >= 2 and --diversity-prompts >= 0")
    if args.prompts < 200:
        log.warning("%d prompts: the reported figure uses at least 200", args.prompts)
    if args.probe_limit < 1:
        raise PixelsceneError("--probe-limit must be >= 1")
    scene = PixelScene.load(args.model)
    probe, info = load_probe(args.probe)
    if args.probe_data is not None:  # the probe is trusted on figures measured now
        pooled, labels = load_attribute_data(args.probe_data, args.probe_limit, pool=probe.pool)
        info = dict(info, eval_accuracy=accuracy(probe, pooled, labels))
        info["eval_accuracy_source"] = f"measured on {args.probe_data} ({len(pooled)} scenes)"
    bar = tqdm(total=1, unit="code", desc="evaluating", disable=None, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        result = evaluate(
            scene,
            probe,
            info,
            prompts=args.prompts,
            seed=args.seed,
            cfg_grid=args.cfg_grid,
            temperature_grid=args.temperature_grid,
            grid_prompts=args.grid_prompts,
            diversity_prompts=args.diversity_prompts,
            diversity_seeds=args.diversity_seeds,
            batch_size=args.batch,
            paraphrases=args.paraphrases,
            grid_path=args.grid,
            progress=progress,
        )
    finally:
        bar.close()
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0
