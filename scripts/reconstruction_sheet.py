"""A model card's picture: held-out scenes with landmarks, each original above its
reconstruction, at 2x nearest-neighbour.

    python scripts/reconstruction_sheet.py --model DIR --data DIR -o sheet.png [--count 8]

Scenes are the first ones of `--data` (a `pixelscene synth` folder) whose landmark is not
"none", one per landmark kind while kinds last, so castles, lighthouses, towers, cottages
and ruins all appear.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
from PIL import Image

from pixelscene.data.datasets import read_image, to_float, to_uint8
from pixelscene.image_tokenizers import load_tokenizer


def pick(data: Path, count: int) -> list[Path]:
    records = [json.loads(line) for line in (data / "attributes.jsonl").read_text().splitlines()]
    with_landmark = [r for r in records if r.get("landmark", "none") != "none"]
    chosen, kinds = [], set()
    for r in with_landmark:  # one of each kind first
        if r["landmark"] not in kinds:
            kinds.add(r["landmark"])
            chosen.append(r)
    chosen += [r for r in with_landmark if r not in chosen]
    return [data / "images" / r["image"] for r in chosen[:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("-o", "--out", required=True)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--columns", type=int, default=4)
    args = parser.parse_args()
    model = load_tokenizer(args.model)
    originals = np.stack([read_image(p) for p in pick(args.data, args.count)])
    recon = to_uint8(np.array(model.reconstruct(mx.array(to_float(originals)))))
    gap = 4
    pairs = [
        np.concatenate([o, np.zeros((gap, 320, 3), np.uint8), r])
        for o, r in zip(originals, recon, strict=True)
    ]
    rows = []
    for i in range(0, len(pairs), args.columns):
        row = pairs[i : i + args.columns]
        sep = np.zeros((row[0].shape[0], gap, 3), np.uint8)
        rows.append(np.concatenate([x for p in row for x in (p, sep)][:-1], axis=1))
    sheet = np.concatenate(
        [x for r in rows for x in (r, np.zeros((gap * 2, r.shape[1], 3), np.uint8))][:-1]
    )
    Image.fromarray(sheet).resize(
        (sheet.shape[1] * 2, sheet.shape[0] * 2), Image.Resampling.NEAREST
    ).save(args.out)
    print(f"wrote {args.out}: {len(pairs)} scenes, original above reconstruction, 2x")


if __name__ == "__main__":
    main()
