"""Prompt adherence: does a generated image show what its prompt asked for?

A fixed set of prompts is built from attribute combinations of the held-out split (never
seen in training), each with a caption that names its attributes. Images generated from
them are read back by the attribute probe (`pixelscene.eval.probe`) and scored only on the
attributes the prompt names. The same targets scored on images from the empty prompt give
the chance level of this model. Diversity is measured on code grids of one prompt under
different seeds, and a table shows adherence against cfg_scale and temperature.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.eval.eval_prompt import EvalPrompt
from pixelscene.output.sheet import image_grid

GRID_IMAGES = 16


def named_attributes(text: str, attributes: dict[str, str]) -> tuple[str, ...]:
    """Attributes whose value the text names, and no other value of the same attribute."""
    from pixelscene.data.captions import named_values

    found = named_values(text)
    named = []
    for name in ATTRIBUTES:
        values = {v for a, v in found if a == name}
        if values == {attributes[name]}:
            named.append(name)
    return tuple(named)


def build_prompts(count: int, seed: int = 0) -> list[EvalPrompt]:
    """`count` held-out prompts, the same for the same seed (in any process)."""
    from pixelscene.data.captions import caption_for
    from pixelscene.data.synth import sample_attributes

    rng = np.random.default_rng([seed, 0x5CE7E])
    prompts: list[EvalPrompt] = []
    while len(prompts) < count:
        attrs = sample_attributes(rng, "test")
        attrs = {k: attrs[k] for k in ATTRIBUTES}
        text = caption_for(attrs, rng, complete=True)
        named = named_attributes(text, attrs)
        if named:
            prompts.append(EvalPrompt(text, attrs, named))
    return prompts


def score(prompts: Sequence[EvalPrompt], predicted: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Accuracy of predicted attributes against the prompts' named targets.

    Returns `adherence` (mean over all named (prompt, attribute) pairs), `adherence_macro`
    (mean of the per-attribute figures), `per_attribute`, `named_counts` and `all_named`
    (fraction of prompts whose named attributes are all shown).
    """
    hits = {k: 0 for k in ATTRIBUTES}
    counts = {k: 0 for k in ATTRIBUTES}
    whole = 0
    for p, pred in zip(prompts, predicted, strict=True):
        ok = [pred[k] == p.attributes[k] for k in p.named]
        whole += all(ok)
        for k, good in zip(p.named, ok, strict=True):
            hits[k] += good
            counts[k] += 1
    per = {k: hits[k] / counts[k] for k in ATTRIBUTES if counts[k]}
    pairs = sum(counts.values())
    return {
        "adherence": sum(hits.values()) / pairs if pairs else 0.0,
        "adherence_macro": float(np.mean(list(per.values()))) if per else 0.0,
        "per_attribute": per,
        "named_counts": counts,
        "all_named": whole / len(prompts) if prompts else 0.0,
    }


def diversity(grids: np.ndarray) -> tuple[float, float]:
    """(mean pairwise Hamming distance as a fraction of codes, fraction of identical pairs)
    over code grids (S, rows, cols) of one prompt."""
    flat = grids.reshape(len(grids), -1)
    dists = [float((a != b).mean()) for a, b in itertools.combinations(flat, 2)]
    if not dists:
        return 0.0, 0.0
    return float(np.mean(dists)), float(np.mean([d == 0.0 for d in dists]))


def evaluate(
    scene,
    probe,
    probe_info: dict[str, Any],
    *,
    prompts: int = 200,
    seed: int = 0,
    cfg_grid: Sequence[float] = (1.0, 2.0, 3.0, 5.0),
    temperature_grid: Sequence[float] = (0.8, 1.0),
    grid_prompts: int = 64,
    diversity_prompts: int = 8,
    diversity_seeds: int = 4,
    batch_size: int = 32,
    paraphrases: int = 120,
    grid_path: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Measure adherence, the empty-prompt chance level, diversity and the settings table.

    Args:
        scene: a loaded `PixelScene`.
        probe, probe_info: from `pixelscene.eval.probe.load_probe`.
        prompts: held-out prompts scored at the model's default settings.
        grid_prompts: the first N of them, scored at every (cfg_scale, temperature).
        paraphrases: prompts of the paraphrase set (`pixelscene.eval.paraphrases`), written
            in words the caption grammar never produces, scored at the default settings.
        diversity_prompts, diversity_seeds: prompts and seeds per prompt for diversity.
        grid_path: write a PNG of the images of the first 16 prompts here.
        progress: called with (codes done, codes total) over the whole evaluation.
    Returns:
        A JSON-able dict (see the README's evaluation section).
    """
    from pixelscene.eval.paraphrases import build_paraphrases
    from pixelscene.eval.probe import predict_attributes
    from pixelscene.output import save_png

    t0 = time.perf_counter()
    eval_prompts = build_prompts(prompts, seed)
    para_prompts = build_paraphrases(paraphrases, seed) if paraphrases > 0 else []
    grid_n = min(grid_prompts, len(eval_prompts))
    div_n = min(diversity_prompts, len(eval_prompts))
    defaults = scene.resolve_settings()
    per_image = scene.grid_size[0] * scene.grid_size[1]
    table_runs = list(itertools.product(cfg_grid, temperature_grid))
    n_empty = max(len(eval_prompts), len(para_prompts))
    total = per_image * (
        len(eval_prompts)
        + n_empty
        + len(para_prompts)
        + grid_n * len(table_runs)
        + div_n * diversity_seeds
    )
    done = 0

    def run(texts: list[str], n: int, run_seed: int, **settings) -> list:
        nonlocal done
        images = None
        for step in scene.iter_generate(
            texts, n=n, seed=run_seed, batch_size=batch_size, **settings
        ):
            if progress is not None:
                progress(done + step.done, total)
            images = step.images
        done += len(texts) * n * per_image
        return images

    texts = [p.text for p in eval_prompts]
    main_images = run(texts, 1, seed)
    main = score(eval_prompts, predict_attributes(probe, np.stack([i.pixels for i in main_images])))
    empty_images = run([""], n_empty, seed)
    empty_pred = predict_attributes(probe, np.stack([i.pixels for i in empty_images]))
    empty = score(eval_prompts, empty_pred[: len(eval_prompts)])
    para = None
    if para_prompts:
        para_images = run([p.text for p in para_prompts], 1, seed)
        para = score(
            para_prompts, predict_attributes(probe, np.stack([i.pixels for i in para_images]))
        )
        para_empty = score(para_prompts, empty_pred[: len(para_prompts)])

    table = []
    for cfg_scale, temperature in table_runs if grid_n else []:
        imgs = run(texts[:grid_n], 1, seed, cfg_scale=cfg_scale, temperature=temperature)
        s = score(
            eval_prompts[:grid_n], predict_attributes(probe, np.stack([i.pixels for i in imgs]))
        )
        table.append(
            {
                "cfg_scale": float(cfg_scale),
                "temperature": float(temperature),
                "adherence": s["adherence"],
                "per_attribute": s["per_attribute"],
            }
        )

    div_images = run(texts[:div_n], diversity_seeds, seed + 7919) if div_n else []
    dists, dups = [], []
    for i in range(div_n):
        grids = np.stack(
            [im.codes for im in div_images[i * diversity_seeds : (i + 1) * diversity_seeds]]
        )
        d, f = diversity(grids)
        dists.append(d)
        dups.append(f)

    grid_texts = texts[:GRID_IMAGES]
    if grid_path is not None:
        sheet = image_grid([im.pixels for im in main_images[:GRID_IMAGES]])
        meta = {
            "model": scene.name,
            "model_version": scene.version,
            "prompts": "\n".join(f"{i + 1}. {t}" for i, t in enumerate(grid_texts)),
        }
        save_png(grid_path, sheet, metadata=meta)

    best = max(table, key=lambda r: r["adherence"]) if table else None
    encode_ms = prompt_encode_ms(scene, texts[:20])
    probe_acc = probe_info.get("eval_accuracy", {})
    result: dict[str, Any] = {
        "model": scene.name,
        "model_version": scene.version,
        "prompts": len(eval_prompts),
        "seed": seed,
        "settings": defaults,
        "adherence": main["adherence"],
        "adherence_empty_prompt": empty["adherence"],
        "adherence_macro": main["adherence_macro"],
        "all_named": main["all_named"],
        "per_attribute": main["per_attribute"],
        "per_attribute_empty_prompt": empty["per_attribute"],
        "named_counts": main["named_counts"],
        "probe_accuracy": probe_acc.get("mean"),
        "probe_per_attribute": {k: v for k, v in probe_acc.items() if k != "mean"},
        "probe_accuracy_source": probe_info.get(
            "eval_accuracy_source", "stored with the probe (its held-out split, when trained)"
        ),
        "diversity": {
            "prompts": div_n,
            "seeds_per_prompt": diversity_seeds,
            "mean_pairwise_hamming": float(np.mean(dists)) if dists else 0.0,
            "duplicate_fraction": float(np.mean(dups)) if dups else 0.0,
        },
        "settings_table": {"prompts": grid_n, "rows": table},
        "best_settings": (
            {"cfg_scale": best["cfg_scale"], "temperature": best["temperature"]} if best else None
        ),
        "paraphrase": (
            {
                "prompts": len(para_prompts),
                "adherence": para["adherence"],
                "adherence_empty_prompt": para_empty["adherence"],
                "per_attribute": para["per_attribute"],
                "named_counts": para["named_counts"],
            }
            if para is not None
            else None
        ),
        "text_encoder": scene.config.transformer.text_encoder,
        "prompt_encode_ms": encode_ms,
        "grid_prompts": grid_texts if grid_path is not None else [],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if "eval_accuracy_vqgan_round_trip" in probe_info:
        result["probe_accuracy_vqgan_round_trip"] = probe_info[
            "eval_accuracy_vqgan_round_trip"
        ].get("mean")
    return result


def prompt_encode_ms(scene, texts: Sequence[str]) -> float:
    """Median milliseconds to turn one prompt into caption states (once per job)."""
    import mlx.core as mx

    times = []
    for text in texts:
        t = time.perf_counter()
        mx.eval(*scene.encode_prompts([text]))
        times.append((time.perf_counter() - t) * 1000)
    return round(float(np.median(times)), 2) if times else 0.0


def format_report(result: dict[str, Any]) -> str:
    """A short human-readable summary of `evaluate`'s result."""
    lines = [
        f"model {result['model_version']}, {result['prompts']} held-out prompts, "
        f"settings {result['settings']}",
        f"probe accuracy on held-out real images: {result['probe_accuracy']:.3f} "
        f"({result['probe_accuracy_source']})"
        if result["probe_accuracy"] is not None
        else "probe accuracy: unknown",
        *(
            [
                "  per attribute: "
                + ", ".join(f"{k} {v:.3f}" for k, v in result["probe_per_attribute"].items())
            ]
            if result.get("probe_per_attribute")
            else []
        ),
        f"adherence {result['adherence']:.3f}  (empty prompt: {result['adherence_empty_prompt']:.3f})",
    ]
    for k, v in result["per_attribute"].items():
        e = result["per_attribute_empty_prompt"].get(k, 0.0)
        lines.append(f"  {k:<11} {v:.3f}  (empty {e:.3f}, n={result['named_counts'][k]})")
    para = result.get("paraphrase")
    if para:
        lines.append(
            f"paraphrases ({para['prompts']} prompts in words the captions never use): "
            f"{para['adherence']:.3f}  (empty prompt: {para['adherence_empty_prompt']:.3f})"
        )
        for k, v in para["per_attribute"].items():
            lines.append(f"  {k:<11} {v:.3f}  (n={para['named_counts'][k]})")
    lines.append(
        f"text encoder {result['text_encoder']}: {result['prompt_encode_ms']:.1f} ms per prompt"
    )
    d = result["diversity"]
    lines.append(
        f"diversity: mean pairwise Hamming {d['mean_pairwise_hamming']:.3f}, "
        f"duplicates {d['duplicate_fraction']:.3f}"
    )
    lines.append(f"adherence vs settings ({result['settings_table']['prompts']} prompts):")
    lines.append("  cfg_scale  temperature  adherence")
    for row in result["settings_table"]["rows"]:
        lines.append(
            f"  {row['cfg_scale']:>9.1f}  {row['temperature']:>11.2f}  {row['adherence']:.3f}"
        )
    return "\n".join(lines)
