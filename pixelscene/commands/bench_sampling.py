"""`pixelscene bench sampling`: the plan's sampler against the KV-cached one, same weights.

The plan's sampler re-runs the whole growing prefix through the model for every new token
(no cache, no compilation, softmax probabilities fed to `categorical` as the plan wrote it).
The cached sampler is timed with each engine (`mlx`: compiled MLX steps; `cpu`: the
compiled CPU decoding step MLX's CPU device uses by default), after one untimed run of the same
batch size has compiled its steps. `cached_*` figures are the default engine's; the
`engines` entry has both, measured side by side in the same process. Every figure is the
fastest of `--repeats` runs, the engines taking turns, so that a burst of load from
elsewhere on a shared machine shows up in neither the figures nor their ratios. The plan's sampler
is slow, so by default only its first and last K tokens are timed and the per-token time,
linear in the prefix length, is extrapolated to the whole sequence; the output says so.

The plan's sampler has no guidance (one row per image). `speedup_b1` sets it against the
cached sampler at the model's default settings, with guidance (two rows per image), and
`speedup_b1_nocfg` against the cached sampler without guidance, like for like.

With `--profile`, `largest_batch` says where the largest batch's time goes
(`pixelscene.sampling.profile`): its step times at the first and last positions, the
products' arithmetic, the bytes an image reads from the self-attention cache, and this
machine's memory read speed.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

from pixelscene.commands.arguments import name_list, positive_int_list

PROMPT = "a castle on the hills at sunset with pine trees and clouds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--presets", type=name_list, default="base,tiny", help="comma-separated presets"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--plan-tokens",
        type=int,
        default=16,
        help="time the plan's sampler on its first and last K tokens and extrapolate (0: all)",
    )
    parser.add_argument(
        "--batches",
        type=positive_int_list,
        default="1,8,32",
        help="batch sizes of the cached sampler",
    )
    parser.add_argument(
        "--engines",
        type=name_list,
        default="cpu,mlx",
        help="comma-separated sampler engines to time",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="time each setting this many times (engines interleaved) and keep the fastest",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also say where the largest batch's time goes (step times, arithmetic, memory)",
    )


def plan_generate(model, ctx, batch: int, first: int, count: int):
    """The plan's loop: start token 0, full forward over the growing prefix every step."""
    import mlx.core as mx

    generated = mx.zeros((batch, first), dtype=mx.int32)
    for _ in range(count):
        if model.digits:  # the same uncached loop; the digits drawn as a grid code's (timing)
            h = model.hidden(generated, ctx)[:, -1]
            nxt = model.digit_head.sample(h, lambda k, lg: mx.random.categorical(lg), False)
            generated = mx.concatenate([generated, nxt[:, None].astype(mx.int32)], axis=1)
            continue
        logits = model.decode(generated, ctx)  # whole prefix, no cache
        probs = mx.softmax(logits[:, -1, :], axis=-1)
        nxt = mx.random.categorical(probs)[:, None]  # (the plan's bug, kept for timing)
        generated = mx.concatenate([generated, nxt.astype(mx.int32)], axis=1)
    mx.eval(generated)
    return generated


def _fastest(fn, repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls of fn()."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_plan(model, ctx, k: int, repeats: int = 1) -> tuple[float, bool]:
    """Seconds for one image of the plan's sampler (seq_len - 1 tokens), maybe extrapolated."""
    total = model.seq_len - 1
    if k <= 0 or 2 * k >= total:
        return _fastest(lambda: plan_generate(model, ctx, 1, 1, total), repeats), False
    early = _fastest(lambda: plan_generate(model, ctx, 1, 1, k), repeats) / k  # prefixes 1..k
    # prefixes total-k+1..total
    late = _fastest(lambda: plan_generate(model, ctx, 1, total - k + 1, k), repeats) / k
    # per-token cost is ~linear in the prefix length: integrate the line through both points
    mid_early, mid_late = (1 + k) / 2, total - k / 2
    slope = (late - early) / (mid_late - mid_early)
    return sum(early + slope * (p - mid_early) for p in range(1, total + 1)), True


def peak_rss_mb() -> float:
    """The process's peak resident memory (MLX's counter misses NumPy's buffers)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 2**10, 1)


def bench_preset(
    name: str,
    batches: list[int],
    plan_tokens: int,
    engines: list[str],
    repeats: int = 3,
    profile: bool = False,
) -> dict:
    import mlx.core as mx
    import numpy as np

    from pixelscene.config import load_config
    from pixelscene.model_io import round_to_float16
    from pixelscene.sampling import WINDOW_CHUNK, resolve_engine, sample_codes
    from pixelscene.sampling.profile import batch_profile
    from pixelscene.transformer import Tokenizer
    from pixelscene.transformer.model import build_transformer

    cfg = load_config(name)
    mx.random.seed(0)
    length = cfg.token_layout().length
    model = build_transformer(cfg)
    model.eval()
    # float16 values, as every model folder holds them (and a loaded model has them)
    round_to_float16(model)
    mx.eval(model.parameters())
    tok = Tokenizer.build([PROMPT], cfg.transformer.text_vocab_size, cfg.transformer.max_text_len)
    ids, mask = tok.encode_batch([PROMPT])
    if "text_encoder" in model:
        states, mask = model.encode_text(ids, mask)
    else:  # a frozen encoder (timed on its own): random states of its width, same length
        states = mx.random.normal((1, ids.shape[1], model.text_dim))
        mask = mx.array(mask)
    s = cfg.sampling
    settings = dict(
        temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, cfg_scale=s.cfg_scale,
        noise=s.noise,
    )  # fmt: skip
    mx.clear_cache()
    mx.reset_peak_memory()
    result: dict = {"params": int(sum(v.size for _, v in _flat(model.parameters())))}
    result["weights"] = "random, float16 values"
    plan_s, extrapolated = time_plan(model, model.context(states, mask), plan_tokens, repeats)
    result["plan_sampler_s_per_image"] = round(plan_s, 3)
    result["plan_sampler_extrapolated"] = extrapolated
    if extrapolated:
        result["plan_sampler_tokens_timed"] = 2 * plan_tokens

    def run(b: int, **kw) -> None:
        codes = sample_codes(model, states, mask, seeds=list(range(b)), **kw)
        assert codes.shape == (b, length) and np.all((codes >= 0) & (codes < model.codebook_size))

    default = resolve_engine("auto")
    runs = [(f"b{b}_s_per_image", b, {}) for b in batches]
    runs.append(("b1_nocfg_s_per_image", 1, {"cfg_scale": 1.0}))
    timed: dict[str, dict] = {engine: {} for engine in engines}
    for key, b, extra in runs:
        kws = {engine: {**settings, **extra, "engine": engine} for engine in engines}
        for engine in engines:
            run(b, **kws[engine])  # compiles every window's step
        best = {engine: float("inf") for engine in engines}
        for _ in range(max(1, repeats)):
            for engine in engines:  # taking turns
                seconds = _fastest(partial(run, b, **kws[engine]), 1)
                best[engine] = min(best[engine], seconds)
        for engine in engines:
            timed[engine][key] = round(best[engine] / b, 4)
    result["engine"] = default if default in timed else engines[0]
    for k, v in timed[result["engine"]].items():
        result[f"cached_{k}"] = v
    result["engines"] = timed
    if len(timed) > 1 and all("b1_s_per_image" in r for r in timed.values()):
        b1 = {e: r["b1_s_per_image"] for e, r in timed.items()}
        fastest = min(b1, key=b1.get)
        result["engine_speedup_b1"] = round(max(b1.values()) / b1[fastest], 2)
    if "cached_b1_s_per_image" in result:
        b1 = result["cached_b1_s_per_image"]
        result["speedup_b1"] = round(plan_s / b1, 1)
        if "cached_b1_nocfg_s_per_image" in result:  # like for like: one row, no guidance
            result["speedup_b1_nocfg"] = round(plan_s / result["cached_b1_nocfg_s_per_image"], 1)
        for b in batches:
            if b > 1:  # per-image time at batch b as a fraction of batch 1 (target <= 1/6)
                result[f"ratio_b{b}_to_b1"] = round(result[f"cached_b{b}_s_per_image"] / b1, 3)
    if profile and batches:
        kw = {**settings, "engine": result["engine"]}  # compiled by the timings above
        result["largest_batch"] = batch_profile(model, states, mask, max(batches), kw)
    result["repeats"] = repeats
    result["attention_window_chunk"] = WINDOW_CHUNK
    result["cfg_scale"] = s.cfg_scale
    result["peak_memory_mb"] = round(mx.get_peak_memory() / 2**20, 1)  # MLX buffers
    result["peak_rss_mb"] = peak_rss_mb()  # whole process so far
    return result


def _flat(tree):
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


def check_engines(engines: list[str]) -> None:
    """--engines names only sampling engines."""
    from pixelscene.errors import PixelsceneError
    from pixelscene.sampling import ENGINES

    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise PixelsceneError(f"--engines takes {', '.join(ENGINES)}, got {', '.join(bad)}")


def run(args: argparse.Namespace) -> int:
    import mlx.core as mx

    from pixelscene.errors import PixelsceneError

    batches, engines = args.batches, args.engines
    check_engines(engines)
    out = {}
    for name in args.presets:
        if args.repeats < 1:
            raise PixelsceneError(f"--repeats must be at least 1, got {args.repeats}")
        out[name] = bench_preset(
            name, batches, args.plan_tokens, engines, args.repeats, args.profile
        )
        if not args.json:
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in out[name].items()), flush=True)
    out["device"] = str(mx.default_device())
    if args.json:
        print(json.dumps(out, indent=1))
    elif any(r.get("plan_sampler_extrapolated") for r in out.values() if isinstance(r, dict)):
        print(
            f"plan sampler: first and last {args.plan_tokens} tokens timed, per-token time "
            "extrapolated linearly in the prefix length (--plan-tokens 0 times it all)"
        )
    return 0
