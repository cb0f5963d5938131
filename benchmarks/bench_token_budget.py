"""What a tokenizer's layout costs the transformer: training tokens/s and images/s for each
layout of the tokenizer design study (`pixelscene/models/pixel/MODEL_CARD.md`), side by side
in one run, on the bundled `tiny` transformer's sizes with frozen-encoder caption states.

    python benchmarks/bench_token_budget.py [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from pixelscene.config import load_config
from pixelscene.transformer.model import ImageTransformer

# (name, tokens per image, vocabulary) of each layout
LAYOUTS = [
    ("(a) 16x16 patches, 1 code", 13 * 20, 4375),
    ("(b) 8x8 patches, 1 code", 26 * 40, 4375),
    ("(b') 8x8 patches + 64-colour palette", 26 * 40 + 3 * 64, 4375 + 65),
    ("(c) 16x16 patches, 3 codes", 13 * 20 * 3, 4375),
]


def tokens_per_second(seq_len: int, vocab: int, batch: int, repeats: int) -> float:
    cfg = load_config("tiny").transformer
    model = ImageTransformer(cfg, vocab, seq_len, text_dim=384)
    opt = optim.AdamW(learning_rate=1e-4)
    opt.init(model.trainable_parameters())
    codes = mx.random.randint(0, vocab, (batch, seq_len))
    states = mx.random.normal((batch, 16, 384))
    mask = mx.ones((batch, 16), dtype=mx.bool_)
    state = [model.state, opt.state]

    def loss(model, codes):
        return nn.losses.cross_entropy(model(codes, states, mask), codes, reduction="mean")

    grad = nn.value_and_grad(model, loss)

    @partial(mx.compile, inputs=state, outputs=state)
    def step(codes):
        value, grads = grad(model, codes)
        opt.update(model, grads)
        return value

    mx.eval(step(codes))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval(step(codes))
        best = min(best, time.perf_counter() - t0)
    return batch * seq_len / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for name, seq_len, vocab in LAYOUTS:
        tps = tokens_per_second(seq_len, vocab, args.batch, args.repeats)
        rows.append(
            {
                "layout": name,
                "tokens_per_image": seq_len,
                "vocab": vocab,
                "train_tokens_per_s": round(tps),
                "train_images_per_s": round(tps / seq_len, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
