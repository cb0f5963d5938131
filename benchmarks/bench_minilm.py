"""Time the MiniLM text encoder: load, prompt encoding at batch 1, and caption-cache throughput.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \\
        .venv/bin/python benchmarks/bench_minilm.py [--prompts 40] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import mlx.core as mx

from pixelscene.transformer.minilm import MiniLMEncoder

WORDS = (
    "a castle on the hills at dusk with rain fortress in the woods after dark wintry "
    "lighthouse by the sea at dawn foggy desert ruins among cacti under two moons cozy "
    "cottage beside a quiet lake snowy mountain pass tropical beach with palms at noon"
).split()


def prompts(n: int, offset: int = 0) -> list[str]:
    """Varied prompts of 3 to 20 words (so token lengths vary as real ones do)."""
    out = []
    for i in range(n):
        k = 3 + (i * 7) % 18
        start = (i * 11 + offset) % len(WORDS)
        out.append(" ".join(WORDS[(start + j) % len(WORDS)] for j in range(k)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--max-len", type=int, default=48)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    t0 = time.perf_counter()
    enc = MiniLMEncoder.load()
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    mx.eval(enc.encode(["the first prompt of a process"], args.max_len))
    first_s = time.perf_counter() - t0

    times = []
    for text in prompts(args.prompts):
        t0 = time.perf_counter()
        mx.eval(enc.encode([text], args.max_len))
        times.append(time.perf_counter() - t0)
    # Same prompts again: every shape already seen (what a long-lived worker mostly sees).
    warm = []
    for text in prompts(args.prompts):
        t0 = time.perf_counter()
        mx.eval(enc.encode([text], args.max_len))
        warm.append(time.perf_counter() - t0)

    captions = prompts(512, offset=3)
    t0 = time.perf_counter()
    for i in range(0, len(captions), 64):
        states, mask = enc.encode(captions[i : i + 64], args.max_len)
        mx.eval(states)
    cache_rate = len(captions) / (time.perf_counter() - t0)

    result = {
        "device": str(mx.default_device()),
        "load_s": round(load_s, 3),
        "first_prompt_ms": round(first_s * 1e3, 2),
        "prompt_b1_median_ms": round(statistics.median(times) * 1e3, 2),
        "prompt_b1_max_ms": round(max(times) * 1e3, 2),
        "prompt_b1_repeat_median_ms": round(statistics.median(warm) * 1e3, 2),
        "cache_captions_per_s_b64": round(cache_rate, 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"MiniLM ({result['device']}), max_len {args.max_len}")
    print(f"  load                         {result['load_s']:.3f} s")
    print(f"  first prompt (cold)         {result['first_prompt_ms']:.1f} ms")
    print(
        f"  prompt encode, batch 1       {result['prompt_b1_median_ms']:.2f} ms median, "
        f"{result['prompt_b1_max_ms']:.1f} ms max ({args.prompts} prompts)"
    )
    print(f"  same prompts again           {result['prompt_b1_repeat_median_ms']:.2f} ms median")
    print(f"  caption cache, batch 64      {result['cache_captions_per_s_b64']:.0f} captions/s")


if __name__ == "__main__":
    main()
