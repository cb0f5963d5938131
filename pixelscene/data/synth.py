"""The synthetic dataset: coherent scene attributes, the held-out split, and dataset writing.

Every image gets its own generator `np.random.default_rng([seed, index, stream])`, so the
bytes of image `index` depend only on (seed, index), whatever the worker count. A dataset's
source is either the captioned scenes or the pattern images (`patterns.py`: tiles, sprites,
UI and dithering, for training the image tokenizer on pixel art in general).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.data.captions import caption_for
from pixelscene.data.patterns import pattern_with_info
from pixelscene.data.render import H, W, render_scene

SPLITS = ("train", "test", "all")
SOURCES = ("scenes", "patterns")
RECORDS = {"scenes": "attributes.jsonl", "patterns": "patterns.jsonl"}
PATTERN_WORDS = {
    "map": "tilemap and sprites",
    "side": "side view with parallax bands and platforms",
    "menu": "UI windows",
    "sheet": "sprite sheet",
    "title": "title screen",
    "collage": "tiles, sprites and UI",
}
HELDOUT_PERCENT = 12.5
PNG_OPTIONS = {"format": "PNG", "optimize": False, "compress_level": 6}

# Coherence rules, all in one place: (attribute, values, other attribute, values it excludes).
EXCLUSIONS: list[tuple[str, frozenset[str], str, frozenset[str]]] = [
    ("terrain", frozenset({"desert"}), "weather", frozenset({"snow"})),
    ("weather", frozenset({"snow"}), "vegetation", frozenset({"palms", "cacti"})),
    (
        "terrain",
        frozenset({"mountains", "hills", "plains", "coast", "lake"}),
        "vegetation",
        frozenset({"cacti"}),
    ),
    ("terrain", frozenset({"mountains", "hills", "plains"}), "vegetation", frozenset({"palms"})),
    ("terrain", frozenset({"desert"}), "vegetation", frozenset({"pine", "broadleaf"})),
    (
        "terrain",
        frozenset({"mountains", "hills", "plains", "desert"}),
        "landmark",
        frozenset({"lighthouse"}),
    ),
]
# Sampling weights that keep rarer-but-allowed values from vanishing.
WEIGHTS = {("landmark", "lighthouse"): 3.0, ("vegetation", "cacti"): 2.0}
SAMPLE_ORDER = ("terrain", "weather", "time", "landmark", "vegetation")


def is_coherent(attrs: dict) -> bool:
    """Whether a (possibly partial) attribute dict breaks none of the coherence rules."""
    for a, av, b, bv in EXCLUSIONS:
        if attrs.get(a) in av and attrs.get(b) in bv:
            return False
    cel = attrs.get("celestial")
    if cel is not None:
        time, weather = attrs.get("time"), attrs.get("weather")
        if "sun" in cel and (time == "night" or weather in ("rain", "snow", "fog")):
            return False
        if "stars" in cel and time != "night":
            return False
        if "moon" in cel and time not in ("night", "dawn"):
            return False
        if cel and weather == "fog":
            return False
    return True


def combo_key(attrs: dict) -> tuple[str, ...]:
    return tuple(attrs[k] for k in ATTRIBUTES)


def is_heldout(attrs: dict) -> bool:
    """Deterministic, process-stable: about 12.5% of attribute combinations are held out."""
    key = "pixelscene-heldout-v1|" + "|".join(combo_key(attrs))
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000 < HELDOUT_PERCENT * 100


def valid_combinations() -> list[dict]:
    """Every coherent (time, weather, terrain, landmark, vegetation) combination."""
    out = []
    for values in itertools.product(*ATTRIBUTES.values()):
        attrs = dict(zip(ATTRIBUTES, values))
        if is_coherent(attrs):
            out.append(attrs)
    return out


def sample_celestial(attrs: dict, rng: np.random.Generator) -> list[str]:
    """Sun, moon and stars consistent with the time and weather."""
    time, weather = attrs["time"], attrs["weather"]
    cel = []
    if time == "night":
        if weather == "clear":
            cel = ["stars"] + (["moon"] if rng.random() < 0.75 else [])
        elif weather == "clouds":
            cel = [c for c in ("moon", "stars") if rng.random() < 0.5]
    elif weather == "clear":
        cel = ["sun"]
        if time == "dawn" and rng.random() < 0.3:
            cel.append("moon")
    elif weather == "clouds" and rng.random() < 0.5:
        cel = ["sun"]
    return sorted(cel)


def sample_attributes(rng: np.random.Generator, split: str = "train") -> dict:
    """A coherent attribute dict (with "celestial") from the given split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    while True:
        attrs: dict = {}
        for name in SAMPLE_ORDER:
            options = [v for v in ATTRIBUTES[name] if is_coherent({**attrs, name: v})]
            w = np.array([WEIGHTS.get((name, v), 1.0) for v in options])
            attrs[name] = options[int(rng.choice(len(options), p=w / w.sum()))]
        if split == "all" or is_heldout(attrs) == (split == "test"):
            break
    attrs = {k: attrs[k] for k in ATTRIBUTES}
    attrs["celestial"] = sample_celestial(attrs, rng)
    return attrs


def make_example(seed: int, index: int, split: str = "train", captions: int = 3):
    """Render example `index`: (png bytes, attributes dict, list of captions)."""
    attrs = sample_attributes(np.random.default_rng([seed, index, 0]), split)
    rgb, info = render_scene(attrs, np.random.default_rng([seed, index, 1]))
    crng = np.random.default_rng([seed, index, 2])
    caps = [caption_for(attrs, crng) for _ in range(captions)]
    name = f"{index:06d}.png"
    record = {"image": name, **attrs, "split": "test" if is_heldout(attrs) else "train"}
    record.update(colors=info["colors"], horizon=info["horizon"], seed=seed)
    return _png(rgb), record, caps


def make_pattern_example(seed: int, index: int):
    """Render pattern image `index`: (png bytes, record, [one plain descriptive caption])."""
    rgb, info = pattern_with_info(np.random.default_rng([seed, index, 3]))
    record = {"image": f"{index:06d}.png", "source": "patterns", **info, "seed": seed}
    words = PATTERN_WORDS[info["layout"]]
    caption = f"pixel-art {words}, {info['scale']}x, {info['colors']} colours"
    return _png(rgb), record, [caption]


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, **PNG_OPTIONS)
    return buf.getvalue()


def _render_range(job: tuple) -> list[tuple[dict, list[str]]]:
    out_dir, seed, start, stop, split, captions, source = job
    out = []
    for i in range(start, stop):
        if source == "patterns":
            png, record, caps = make_pattern_example(seed, i)
        else:
            png, record, caps = make_example(seed, i, split, captions)
        (Path(out_dir) / "images" / record["image"]).write_bytes(png)
        out.append((record, caps))
    return out


def iter_synth(
    out_dir, count: int, seed: int, split: str = "train", captions: int = 3, workers: int = 1,
    source: str = "scenes",
) -> Iterator[tuple[dict, list[str]]]:  # fmt: skip
    """Write the images of a dataset, yielding (record, captions) in index order."""
    (Path(out_dir) / "images").mkdir(parents=True, exist_ok=True)
    chunk = 32
    jobs = [
        (str(out_dir), seed, s, min(s + chunk, count), split, captions, source)
        for s in range(0, count, chunk)
    ]
    if workers <= 1:
        for job in jobs:
            yield from _render_range(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(_render_range, jobs):
            yield from part


def heldout_images(data_dir: str | Path) -> tuple[int, int] | None:
    """(images whose attribute combination is held out for evaluation, images) from a
    dataset's attributes.jsonl; None where it has none (not a `pixelscene synth` folder)."""
    path = Path(data_dir) / "attributes.jsonl"
    if not path.is_file():
        return None
    held = total = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
                held += is_heldout(record)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # the dataset loader reports malformed lines
            total += 1
    return held, total


def write_dataset(
    out_dir, count: int, seed: int, split: str = "train", captions: int = 3, workers: int = 1,
    progress=None, source: str = "scenes",
) -> None:  # fmt: skip
    """Write images/, captions.jsonl and the records under out_dir: attributes.jsonl for
    scenes, patterns.jsonl (layout, scale, colours) and one caption each for patterns."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (
        open(out / "captions.jsonl", "w", encoding="utf-8", newline="\n") as fc,
        open(out / RECORDS[source], "w", encoding="utf-8", newline="\n") as fa,
    ):
        for record, caps in iter_synth(out, count, seed, split, captions, workers, source):
            fa.write(json.dumps(record, sort_keys=False) + "\n")
            for c in caps:
                fc.write(json.dumps({"image": record["image"], "caption": c}) + "\n")
            if progress is not None:
                progress(1)


def contact_sheet(paths, cols: int = 8, gap: int = 2) -> Image.Image:
    """Tile images (paths or arrays) into one RGB sheet, `cols` per row."""
    imgs = [Image.open(p).convert("RGB") if not isinstance(p, np.ndarray) else
            Image.fromarray(p) for p in paths]  # fmt: skip
    rows = (len(imgs) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (W + gap) - gap, rows * (H + gap) - gap), (0, 0, 0))
    for i, im in enumerate(imgs):
        sheet.paste(im, ((i % cols) * (W + gap), (i // cols) * (H + gap)))
    return sheet
