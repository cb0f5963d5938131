"""Do two MLX devices write the same codes and paint the same pixels for the bundled model?

On a reference machine (the CPU here), `make` encodes a few prompts, samples their codes with
each engine and decodes them, and saves caption states, seeds, settings, codes and pixels:

    .venv/bin/python scripts/cross_device.py make --out reference.npz

On another device (a GPU with MLX's CUDA backend, a Mac's Metal), `check` samples the same
codes from the saved caption states (so it needs no text encoder there) with that device's
default engine, decodes the reference codes, and prints a JSON report: codes equal per image,
the first position where an image's codes part, and the pixels' largest difference.

    python3 scripts/cross_device.py check --reference reference.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = [
    "a medieval castle on a hilltop at sunset",
    "a dark forest with a river at night",
    "a desert village under a clear blue sky",
    "snowy mountains with pine trees and clouds",
]


def _load(model_dir: str | None):
    """The model folder as a `PixelScene` without its text encoder (the caption states come
    from the reference)."""
    from pixelscene import model_io
    from pixelscene.pipeline import PixelScene
    from pixelscene.transformer.model import build_transformer
    from pixelscene.vqgan import VQGAN

    path = model_io.resolve_model_dir(model_dir)
    cfg = model_io.load_model_config(path)
    transformer = build_transformer(cfg)
    model_io.load_weights(path / "transformer.safetensors", transformer)
    transformer.eval()
    vqgan = VQGAN(cfg.vqgan)
    model_io.load_weights(path / "vqgan.safetensors", vqgan)
    vqgan.eval()
    return PixelScene(path, cfg, vqgan, transformer, tokenizer=None)


def make(args: argparse.Namespace) -> None:
    import mlx.core as mx

    from pixelscene.pipeline import PixelScene
    from pixelscene.sampling import ENGINES, sample_codes

    scene = PixelScene.load(args.model)
    states, mask = scene.encode_prompts(PROMPTS)
    settings = scene.resolve_settings()
    seeds = list(range(len(PROMPTS)))
    codes = {
        e: sample_codes(scene.transformer, states, mask, seeds=seeds, engine=e, **settings)
        for e in ENGINES
    }
    first = codes[ENGINES[0]]
    for e, c in codes.items():
        if not np.array_equal(c, first):
            raise SystemExit(f"engines differ on this machine ({e} vs {ENGINES[0]})")
    pixels = scene.decode_codes(first.reshape(-1, *scene.grid_size))
    np.savez_compressed(
        args.out,
        states=np.array(states.astype(mx.float32)),
        mask=np.array(mask),
        seeds=np.array(seeds),
        settings=json.dumps(settings),
        device=str(mx.default_device()),
        codes=first,
        pixels=pixels,
    )
    print(f"wrote {args.out}: {len(PROMPTS)} images, engines agree on {mx.default_device()}")


def check(args: argparse.Namespace) -> None:
    import mlx.core as mx

    from pixelscene.sampling import sample_codes

    ref = np.load(args.reference)
    scene = _load(args.model)
    settings = json.loads(str(ref["settings"]))
    seeds = [int(s) for s in ref["seeds"]]
    t0 = time.perf_counter()
    states, mask = mx.array(ref["states"]), mx.array(ref["mask"])
    codes = sample_codes(
        scene.transformer, states, mask, seeds=seeds, engine=scene.engine, **settings
    )
    seconds = time.perf_counter() - t0
    same = codes == ref["codes"]
    parted = [int(np.argmin(row)) if not row.all() else None for row in same]
    pixels = scene.decode_codes(ref["codes"].reshape(-1, *scene.grid_size))
    diff = np.abs(pixels.astype(np.int16) - ref["pixels"].astype(np.int16))
    report = {
        "reference_device": str(ref["device"]),
        "device": str(mx.default_device()),
        "engine": scene.engine,
        "images": len(seeds),
        "codes_equal_per_image": [bool(s.all()) for s in same],
        "codes_equal_fraction": float(same.mean()),
        "first_differing_position": parted,
        "sample_seconds_first_run": round(seconds, 3),
        "pixels_max_abs_diff": int(diff.max()),
        "pixels_equal_fraction": float((diff == 0).all(axis=-1).mean()),
    }
    print(json.dumps(report, indent=1))
    if args.save:
        np.savez_compressed(args.save, codes=codes, pixels=pixels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make", help="write the reference on this machine")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="model folder (default: the bundled one)")
    p = sub.add_parser("check", help="compare this device against a reference")
    p.add_argument("--reference", required=True)
    p.add_argument("--model", default=None, help="model folder (default: the bundled one)")
    p.add_argument("--save", default=None, help="also save this device's codes and pixels")
    args = parser.parse_args()
    (make if args.command == "make" else check)(args)


if __name__ == "__main__":
    main()
