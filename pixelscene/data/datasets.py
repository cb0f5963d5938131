"""Image and caption loaders: channels-last float32 in [-1, 1], with bad data reported, not fatal.

Bad data never crashes a long job silently: an unreadable image, a missing file named in
captions.jsonl, a malformed JSON line or a missing key is reported with file and line.
With `strict=True` the first problem raises DataError; otherwise the item is skipped, a
warning is logged, and `problems` holds every report for a summary at the end.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from pixelscene.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
IMAGE_SIZE = (200, 320)  # (height, width)


def to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 HWC in [-1, 1]."""
    return pixels.astype(np.float32) * (2.0 / 255.0) - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> uint8, rounding to the nearest level."""
    return np.clip(np.rint((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def read_image(path: Path, size: tuple[int, int] = IMAGE_SIZE, resize: bool = True) -> np.ndarray:
    """Read an image as uint8 (H, W, 3); other sizes are nearest-resized or rejected."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size[1], size[0]):
                if not resize:
                    raise DataError(
                        f"{path}: image is {img.size[0]}x{img.size[1]}, expected {size[1]}x{size[0]}"
                    )
                img = img.resize((size[1], size[0]), Image.Resampling.NEAREST)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from None


class _Reporting:
    """Shared bad-data policy: raise when strict, else log and remember."""

    strict: bool
    problems: list[str]

    def _problem(self, message: str) -> None:
        if self.strict:
            raise DataError(message)
        if len(self.problems) < 20:
            log.warning("skipping: %s", message)
        self.problems.append(message)

    def summary(self) -> str:
        return f"{len(self.problems)} bad item(s) skipped" if self.problems else "no bad items"


class ImageDataset(_Reporting):
    """Every image in a folder (sorted), as float32 (H, W, 3) in [-1, 1].

    Args:
        image_dir: folder of images (an `images/` subfolder is used if present).
        image_size: (height, width) every image is brought to.
        resize: nearest-resize other sizes (True) or reject them as bad data (False).
        strict: raise on the first bad image instead of skipping it.
    """

    def __init__(
        self,
        image_dir: str | Path,
        image_size: tuple[int, int] = IMAGE_SIZE,
        resize: bool = True,
        strict: bool = False,
    ):
        image_dir = Path(image_dir)
        if (image_dir / "images").is_dir():
            image_dir = image_dir / "images"
        if not image_dir.is_dir():
            raise DataError(f"{image_dir}: not a folder of images")
        self.image_dir = image_dir
        self.image_size = tuple(image_size)
        self.resize = resize
        self.strict = strict
        self.problems: list[str] = []
        self.paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise DataError(f"{image_dir}: no images found")

    def __len__(self) -> int:
        return len(self.paths)

    def load_uint8(self, idx: int) -> np.ndarray:
        return read_image(self.paths[idx], self.image_size, self.resize)

    def __getitem__(self, idx: int) -> np.ndarray:
        return to_float(self.load_uint8(idx))

    def try_get(self, idx: int) -> np.ndarray | None:
        """The image, or None (reported) when it is bad and the dataset is not strict."""
        try:
            return self[idx]
        except DataError as e:
            self._problem(str(e))
            return None


def parse_jsonl(lines: Iterable[str], required: Sequence[str]) -> Iterator[tuple[int, dict | str]]:
    """(line number, row) for each non-blank line that is a JSON object with the required
    keys, (line number, what is wrong) for each other one."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield lineno, f"malformed JSON ({e.msg})"
            continue
        if not isinstance(row, dict):
            yield lineno, "expected a JSON object"
            continue
        missing = [k for k in required if k not in row]
        yield lineno, f"missing key {missing[0]!r}" if missing else row


def utf8_lines(data: bytes) -> tuple[list[str], dict[int, str]]:
    """The lines of `data` as text, and {line number: what is wrong} for the lines that are
    not UTF-8 (left blank in the list, so parsing skips them)."""
    lines, bad = [], {}
    for lineno, raw in enumerate(data.splitlines(), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            lines.append("")
            bad[lineno] = f"not UTF-8 text ({e.reason} at byte {e.start + 1} of the line)"
    return lines, bad


def read_jsonl(path: Path, required: Sequence[str], report: Callable[[str], None]) -> list[dict]:
    """Parse a JSONL file; lines that are not UTF-8, malformed lines and missing keys are
    reported with file:line, in line order."""
    try:
        lines, problems = utf8_lines(path.read_bytes())
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    rows = []
    for lineno, row in parse_jsonl(lines, required):
        if isinstance(row, str):
            problems[lineno] = row
        else:
            row["_line"] = lineno
            rows.append(row)
    for lineno in sorted(problems):
        report(f"{path}:{lineno}: {problems[lineno]}")
    return rows


class CaptionDataset(_Reporting):
    """(image, caption) pairs from `DIR/images/` and `DIR/captions.jsonl`.

    A line's `caption` may be a string or a list of strings (each becomes a pair).

    Args:
        data_dir: dataset folder holding `images/` and `captions.jsonl`.
        captions_file / image_dir: override either location.
        strict: raise on the first bad line or missing image instead of skipping it.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        captions_file: str | Path | None = None,
        image_dir: str | Path | None = None,
        image_size: tuple[int, int] = IMAGE_SIZE,
        resize: bool = True,
        strict: bool = False,
    ):
        if data_dir is None and (captions_file is None or image_dir is None):
            raise DataError("CaptionDataset needs data_dir, or both captions_file and image_dir")
        base = Path(data_dir) if data_dir is not None else None
        self.captions_file = Path(captions_file) if captions_file else base / "captions.jsonl"
        self.image_dir = Path(image_dir) if image_dir else base / "images"
        self.image_size = tuple(image_size)
        self.resize = resize
        self.strict = strict
        self.problems: list[str] = []
        if not self.captions_file.is_file():
            raise DataError(f"{self.captions_file}: captions file not found")
        self.pairs: list[tuple[str, str]] = []
        present = {p.name for p in self.image_dir.iterdir()} if self.image_dir.is_dir() else set()
        for row in read_jsonl(self.captions_file, ("image", "caption"), self._problem):
            where = f"{self.captions_file}:{row['_line']}"
            captions = row["caption"] if isinstance(row["caption"], list) else [row["caption"]]
            if not all(isinstance(c, str) for c in captions) or not isinstance(row["image"], str):
                self._problem(f"{where}: 'image' and 'caption' must be strings")
                continue
            if row["image"] not in present:
                self._problem(f"{where}: image file {self.image_dir / row['image']} not found")
                continue
            self.pairs.extend((row["image"], c) for c in captions)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, str]:
        name, caption = self.pairs[idx]
        return to_float(read_image(self.image_dir / name, self.image_size, self.resize)), caption

    def images(self) -> list[str]:
        """Distinct image names, in first-seen order."""
        return list(dict.fromkeys(name for name, _ in self.pairs))

    def captions_by_image(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, caption in self.pairs:
            out.setdefault(name, []).append(caption)
        return out


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only, so resuming is exact."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_iterator(
    dataset: Any,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    start_batch: int = 0,
    prefetch: int = 4,
    load: Callable[[Any, int], np.ndarray | None] | None = None,
    epochs: int | None = None,
    part: slice | None = None,
) -> Iterator[np.ndarray]:
    """Endless (or `epochs`-long) stream of stacked batches, decoded in a background thread.

    Batch k is always made of the same items for a given seed (bad items are skipped and the
    batch topped up from the same epoch), so `start_batch=k` resumes a stream exactly.
    `part` (rows of each batch, one rank's of a data-parallel run) loads only those rows;
    the parts of a batch without bad items are the whole batch's rows.

    Args:
        dataset: anything with __len__ and `try_get(idx)` (or pass `load(dataset, idx)`).
        start_batch: number of batches to skip, for resuming.
        prefetch: batches decoded ahead of the consumer.
        load: item loader returning an array or None for a bad item.
    """
    load = load or (lambda ds, i: ds.try_get(i))
    n = len(dataset)
    if n < batch_size:
        raise DataError(f"dataset has {n} items, fewer than batch size {batch_size}")
    per_epoch = n // batch_size
    first, stop_row, _ = (part or slice(0, batch_size)).indices(batch_size)
    count = stop_row - first
    out: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def produce() -> None:
        try:
            k = start_batch
            while not stop.is_set() and (epochs is None or k < epochs * per_epoch):
                epoch, j = divmod(k, per_epoch)
                order = epoch_order(n, seed, epoch, shuffle)
                pos, items = j * batch_size + first, []
                while len(items) < count and pos < n:
                    item = load(dataset, int(order[pos]))
                    pos += 1
                    if item is not None:
                        items.append(item)
                if len(items) < count:
                    raise DataError("too many bad items to fill a batch")
                out.put(np.stack(items))
                k += 1
            out.put(None)
        except BaseException as e:  # handed to the consumer, re-raised there
            out.put(e)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                out.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
