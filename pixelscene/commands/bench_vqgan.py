"""`pixelscene bench vqgan`: encode/decode ms per image and training images/s.

Each BLAS setting runs in its own subprocess (MLX picks its BLAS when it loads): the
wheel's own BLAS (`PIXELSCENE_NO_OPENBLAS=1`) and, on Linux where present, OpenBLAS
preloaded. Results are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from pixelscene.commands.arguments import name_list, positive_int_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--presets", type=name_list, default="tiny,base", help="comma-separated presets"
    )
    parser.add_argument(
        "--batch-sizes", type=positive_int_list, default="1,8", help="comma-separated batch sizes"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


def _time(fn, repeats: int) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def measure(preset: str, batch: int, repeats: int) -> dict[str, float]:
    """ms per image for encode/decode of whole images; training images/s on crops."""
    import mlx.core as mx

    from pixelscene.config import load_config
    from pixelscene.train.vqgan import VQGANTrainer

    cfg = load_config(preset)
    if cfg.image_tokenizer == "categorical":
        return measure_tokenizer(cfg, batch, repeats)
    cfg.train_vqgan.batch_size = batch
    trainer = VQGANTrainer(cfg, os.devnull)
    model = trainer.model
    h, w = cfg.vqgan.image_size
    gh, gw = cfg.vqgan.grid_size
    images = mx.random.uniform(-1, 1, (batch, h, w, 3))
    codes = mx.random.randint(0, cfg.vqgan.codebook_size, (batch, gh, gw))
    enc = _time(lambda: mx.eval(model.encode(images)), repeats)
    dec = _time(lambda: mx.eval(model.decode(codes)), repeats)
    s = cfg.train_vqgan.crop_size
    crops = mx.random.uniform(-1, 1, (batch, s, s, 3))
    trainer.tc.disc_start = 10**9
    train = _time(lambda: trainer.train_step(crops), repeats)
    trainer.tc.disc_start = 0
    train_gan = _time(lambda: trainer.train_step(crops), repeats)
    return {
        "encode_ms_per_image": 1000 * enc / batch,
        "decode_ms_per_image": 1000 * dec / batch,
        "train_images_per_s": batch / train,
        "train_gan_images_per_s": batch / train_gan,
        "crop_size": s,
    }


def measure_tokenizer(cfg, batch: int, repeats: int) -> dict[str, float]:
    """The same figures for the categorical image tokenizer (`pixelscene.imagetok`): images
    whose colours come from a 32-colour palette, painted from their own codes."""
    import mlx.core as mx
    import numpy as np

    from pixelscene.data.datasets import to_float
    from pixelscene.data.vga import DAC_LEVELS
    from pixelscene.train.imagetok import TokenizerTrainer

    cfg.train_tokenizer.batch_size = batch
    trainer = TokenizerTrainer(cfg, os.devnull)
    model = trainer.model
    h, w = cfg.tokenizer.image_size
    rng = np.random.default_rng(0)
    palette = DAC_LEVELS[rng.integers(0, 64, size=(32, 3))]
    pixels = palette[rng.integers(0, 32, size=(batch, h, w))].astype(np.uint8)
    images = mx.array(to_float(pixels))
    codes = model.encode(images)
    enc = _time(lambda: mx.eval(model.encode(images)), repeats)
    dec = _time(lambda: mx.eval(model.decode(codes)), repeats)
    s = cfg.train_tokenizer.crop_size
    crops = mx.array(to_float(pixels[:, :s, :s]))
    pal = index = None
    if cfg.tokenizer.palette_size:
        pal, index = (np.array(a) for a in model.palettes(crops))
    train = _time(lambda: trainer.train_step(crops, np.random.default_rng(1), pal, index), repeats)
    return {
        "encode_ms_per_image": 1000 * enc / batch,
        "decode_ms_per_image": 1000 * dec / batch,
        "train_images_per_s": batch / train,
        "crop_size": s,
    }


def _worker(args: argparse.Namespace) -> int:
    out = {}
    for preset in args.presets:
        for batch in args.batch_sizes:
            out[f"{preset}/b{batch}"] = measure(preset, batch, args.repeats)
    print(json.dumps(out))
    return 0


def _run_setting(args: argparse.Namespace, openblas: str | None) -> dict:
    env = dict(os.environ, PIXELSCENE_NO_OPENBLAS="1")
    preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p and "openblas" not in p]
    if openblas:
        preload.insert(0, openblas)
    env["LD_PRELOAD"] = ":".join(preload)
    if not env["LD_PRELOAD"]:
        env.pop("LD_PRELOAD")
    cmd = [sys.executable, "-m", "pixelscene", "bench", "vqgan", "--worker"]
    cmd += [
        "--presets",
        ",".join(args.presets),
        "--batch-sizes",
        ",".join(map(str, args.batch_sizes)),
        "--repeats",
        str(args.repeats),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> int:
    from pixelscene.cli import find_openblas
    from pixelscene.errors import PixelsceneError

    if args.repeats <= 0:
        raise PixelsceneError("--repeats must be positive")
    if args.worker:
        return _worker(args)
    from pixelscene.config import load_config

    for preset in args.presets:
        load_config(preset)  # an unknown preset or a bad file: one error, before any timing
    lib = find_openblas()
    results = {"plain": _run_setting(args, None)}
    if lib:
        results["openblas"] = _run_setting(args, lib)
    if args.json:
        print(json.dumps(results))
        return 1 if any("error" in r for r in results.values()) else 0
    settings = list(results)
    print(f"{'preset/batch':<14}{'figure':<26}" + "".join(f"{s:>12}" for s in settings))
    rows = next((r for r in results.values() if "error" not in r), {})
    for key, figures in rows.items():
        for name in figures:
            if name == "crop_size":
                continue
            vals = [results[s].get(key, {}).get(name) for s in settings]
            cells = "".join(f"{v:>12.1f}" if v is not None else f"{'-':>12}" for v in vals)
            print(f"{key:<14}{name:<26}{cells}")
    failed = [s for s, r in results.items() if "error" in r]
    for s in failed:
        print(f"{s}: failed: {results[s]['error']}", file=sys.stderr)
    return 1 if failed else 0
