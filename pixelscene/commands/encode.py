"""`pixelscene encode`: encode a dataset's images once into a token cache (tokens.npz)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vqgan",
        required=True,
        metavar="MODEL_DIR",
        help="model folder of the image tokenizer (a VQGAN or a categorical tokenizer)",
    )
    parser.add_argument("--data", required=True, help="dataset folder (images/ + captions.jsonl)")
    parser.add_argument("--out", help="cache file (default DATA/tokens.npz)")
    parser.add_argument("--batch-size", type=int, default=16)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pixelscene.data.token_cache import default_path, encode_dataset, vqgan_fingerprint
    from pixelscene.image_tokenizers import load_tokenizer

    fingerprint = vqgan_fingerprint(args.vqgan)
    vqgan = load_tokenizer(args.vqgan)
    out = args.out or default_path(args.data)
    with tqdm(desc="encode", unit="img") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        cache = encode_dataset(vqgan, args.data, fingerprint, out, args.batch_size, progress)
    print(f"{len(cache.images)} images -> {out} (codes {tuple(cache.codes.shape)})")
    return 0
