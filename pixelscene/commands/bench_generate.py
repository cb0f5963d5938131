"""`pixelscene bench generate`: what a user waits for, a prompt in and painted images out.

Each model folder is loaded once (`PixelScene.load`, as `pixelscene generate` does) and warmed
up: each engine's compiled step, then one untimed run of every batch size. A batch's figure is
the wall time of `scene.generate([prompt], n=b, seed=..., batch_size=b)` (prompt encoding,
codes, painting) over b, the fastest of `--repeats` runs, the engines taking turns on the one
loaded model. The best batch has the least time per image. At batch 1 and at the best batch
the same steps also run one at a time on the same codes (the prompts' states, `sample_codes`,
`decode_codes`), each the fastest of `--repeats`, so the parts say where the time goes; they
add up to about the whole.

The headline figures are the default engine's (`auto`: cpu on MLX's CPU device, mlx on a GPU)
where it was timed, else the first engine's; `engines` has every engine's. `peak_rss_mb` is
the whole process's so far, so a model's figure includes the models timed before it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from pathlib import Path

from pixelscene.commands.arguments import name_list, positive_int_list
from pixelscene.commands.bench_sampling import PROMPT, _fastest, check_engines, peak_rss_mb

RANDOM = "random:"  # --model random:PRESET: random weights of a config, written to a temp folder
PARTS = ("prompt", "codes", "paint")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="extend",
        nargs="+",
        metavar="NAME_OR_DIR",
        help="model folders, bundled model names (tiny) or random:PRESET (a config's random "
        "weights); default: the bundled model",
    )
    parser.add_argument(
        "--batches", type=positive_int_list, default="1,2,4,8,16", help="batch sizes to time"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="time each setting this many times (engines taking turns) and keep the fastest",
    )
    parser.add_argument(
        "--engines", type=name_list, default="cpu,mlx", help="comma-separated sampling engines"
    )
    parser.add_argument("--prompt", default=PROMPT, help="the prompt every image is drawn from")
    parser.add_argument("--seed", type=int, default=0, help="base seed (image j: seed + j)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def model_target(spec: str | None):
    """The checked folder that --model names (None: the bundled model), or for `random:PRESET`
    the preset's config (its random weights are written when it is timed)."""
    from pixelscene.config import load_config
    from pixelscene.errors import PixelsceneError
    from pixelscene.model_io import PACKAGE_DIR, model_dir_or_bundled
    from pixelscene.pipeline import check_model_dir

    try:
        if spec is not None and spec.startswith(RANDOM):
            return load_config(spec[len(RANDOM) :])
        folder = model_dir_or_bundled(spec)
        if folder is not None and not folder.exists():
            bundled = PACKAGE_DIR.glob("models/*/config.json")
            names = ", ".join(sorted(p.parent.name for p in bundled))
            raise PixelsceneError(f"no such model folder, bundled model ({names}) or random:PRESET")
        return check_model_dir(folder)[0]
    except PixelsceneError as e:  # a config's, a folder's or the name's: said as --model's
        raise PixelsceneError(f"--model {spec or '(the bundled model)'}: {e}") from None


@contextlib.contextmanager
def loaded(target, engine: str):
    """A PixelScene of a model folder, or of a config's random weights in a temporary folder."""
    import tempfile

    import mlx.core as mx

    from pixelscene.pipeline import PixelScene
    from pixelscene.testing import make_random_model_dir

    if isinstance(target, Path):
        yield PixelScene.load(target, engine=engine)
        return
    with tempfile.TemporaryDirectory(prefix="pixelscene-bench-") as tmp:
        folder = make_random_model_dir(Path(tmp) / "model", target, dtype=mx.float16)
        yield PixelScene.load(folder, engine=engine)


def timed_steps(scene, prompt: str, b: int, seed: int):
    """Seconds of a generate call's steps run one at a time on the same codes (the prompts'
    states, the codes, the painting), and the codes (b, *codes_shape)."""
    import mlx.core as mx

    from pixelscene.sampling import sample_codes

    t0 = time.perf_counter()
    states, mask = scene.encode_prompts([prompt] * b)  # as generate encodes a batch's prompts
    mx.eval(states, mask)
    t1 = time.perf_counter()
    codes = sample_codes(
        scene.transformer,
        states,
        mask,
        seeds=list(range(seed, seed + b)),
        engine=scene.engine,
        noise=scene.config.sampling.noise,
        **scene.resolve_settings(),
    ).reshape(b, *scene.codes_shape)
    t2 = time.perf_counter()
    scene.decode_codes(codes)
    t3 = time.perf_counter()
    return dict(zip(PARTS, (t1 - t0, t2 - t1, t3 - t2), strict=True)), codes


def take_turns(scene, engines: list[str], repeats: int, run) -> dict[str, dict]:
    """Each engine's fastest seconds of each figure that run() returns, over `repeats` rounds
    in which the engines take turns (a burst of load from elsewhere then shows in none)."""
    best: dict[str, dict] = {engine: {} for engine in engines}
    for _ in range(repeats):
        for engine in engines:
            scene.engine = engine  # generate samples with whichever engine this names
            for key, seconds in run().items():
                best[engine][key] = min(best[engine].get(key, math.inf), seconds)
    return best


def _figure(seconds: float) -> float:
    """Four significant digits (a micro model's parts take microseconds)."""
    return float(f"{seconds:.4g}")


def batch_figures(seconds: dict[int, float]) -> dict:
    """Seconds per image of each batch size (from its batch's seconds) and the best batch (the
    least per image; ties: the smaller batch)."""
    per = {f"b{b}_s_per_image": _figure(s / b) for b, s in seconds.items()}
    best = min(seconds, key=lambda b: (per[f"b{b}_s_per_image"], b))
    return {**per, "best_batch": best, "best_s_per_image": per[f"b{best}_s_per_image"]}


def bench_model(
    target,
    batches: list[int],
    engines: list[str],
    repeats: int,
    prompt: str = PROMPT,
    seed: int = 0,
) -> dict:
    """The figures of one model: a folder, or a config whose random weights are timed."""
    from pixelscene.sampling import resolve_engine, sampler_threads

    result: dict = {"load_average_start": [round(x, 2) for x in os.getloadavg()]}
    t0 = time.perf_counter()
    with loaded(target, engines[0]) as scene:
        result["load_s"] = round(time.perf_counter() - t0, 3)
        result["weights"] = "stored" if isinstance(target, Path) else "random, float16 values"
        result["image_tokenizer"] = scene.config.image_tokenizer
        result["codes_per_image"] = math.prod(scene.codes_shape)
        default = resolve_engine("auto")
        result["engine"] = default if default in engines else engines[0]

        def generate(b: int) -> float:
            return _fastest(lambda: scene.generate([prompt], n=b, seed=seed, batch_size=b), 1)

        def steps(sizes: list[int]) -> dict:
            return {
                (b, k): s for b in sizes for k, s in timed_steps(scene, prompt, b, seed)[0].items()
            }

        for engine in engines:
            scene.engine = engine
            scene.warm_up()
            for b in batches:
                generate(b)  # compiles this batch size's steps and fills its caches
        whole = take_turns(scene, engines, repeats, lambda: {b: generate(b) for b in batches})
        figures = {engine: batch_figures(seconds) for engine, seconds in whole.items()}
        split = sorted({1, *(f["best_batch"] for f in figures.values())})
        parts = take_turns(scene, engines, repeats, lambda: steps(split))
        for engine, seconds in parts.items():
            for b in sorted({1, figures[engine]["best_batch"]}):
                for k in PARTS:
                    figures[engine][f"b{b}_{k}_s_per_image"] = _figure(seconds[b, k] / b)
    result.update(figures[result["engine"]])
    result["engines"] = figures
    result["sampler_threads"] = sampler_threads()
    result["cpus"] = os.cpu_count()
    result["repeats"] = repeats
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def run(args: argparse.Namespace) -> int:
    import mlx.core as mx

    from pixelscene.errors import PixelsceneError

    check_engines(args.engines)
    if args.repeats < 1:
        raise PixelsceneError(f"--repeats must be at least 1, got {args.repeats}")
    specs = list(dict.fromkeys(args.model or [None]))
    targets = {spec or "bundled": model_target(spec) for spec in specs}  # all checked first
    models = {}
    for label, target in targets.items():
        models[label] = result = bench_model(
            target, args.batches, args.engines, args.repeats, args.prompt, args.seed
        )
        if not args.json:
            flat = {k: v for k, v in result.items() if k != "engines"}
            print(f"{label}: " + ", ".join(f"{k}={v}" for k, v in flat.items()), flush=True)
            for engine, figures in result["engines"].items():
                print(f"  {engine}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    if args.json:
        print(json.dumps({"models": models, "device": str(mx.default_device())}, indent=1))
    return 0
