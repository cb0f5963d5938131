"""Checking a dataset folder someone sent: keep what a trainer can use, report the rest.

A dataset is the layout `pixelscene synth` writes: `images/` (320x200 images) and
`captions.jsonl` (`{"image": name in images/, "caption": text or [texts]}` a line), with
`attributes.jsonl` or `patterns.jsonl` beside them where the renderer wrote one.
`check_dataset` leaves a folder every trainer reads as it is and says, with file and line,
what it left out and why: unreadable images, images of another size (they are removed, not
resized: a trainer would stretch them), files that are not images, caption lines that are
malformed or name no usable image, and anything else in the folder. Images without a caption
stay (the image tokenizer trains on images alone) and are reported too.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from pixelscene.data.datasets import IMAGE_SIZE, IMAGE_SUFFIXES, parse_jsonl, utf8_lines

CAPTIONS = "captions.jsonl"
RECORD_FILES = ("attributes.jsonl", "patterns.jsonl")  # kept as they are
KEPT_FILES = (CAPTIONS, *RECORD_FILES)
LAYOUT = f"images/, {', '.join(KEPT_FILES)}"
# What macOS adds to archives and folders it makes: dropped without a word.
MAC_CLUTTER = ("__MACOSX", ".DS_Store")


@dataclass(frozen=True)
class Problem:
    """One thing left out or worth knowing: the file (as the sender named it), the line
    where one applies, and what is wrong."""

    file: str
    line: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclass
class DatasetCheck:
    images: int = 0  # usable images kept in images/
    captions: int = 0  # caption lines kept in captions.jsonl
    problems: list[Problem] = field(default_factory=list)


def dataset_root(folder: Path) -> tuple[Path, str]:
    """The folder holding the dataset inside an unpacked archive, and the prefix its files
    had in the archive: `folder` itself, or its only subfolder (`mystyle/images/...`) when
    that is all there is besides macOS clutter."""
    entries = [p for p in folder.iterdir() if not _clutter(p.name)]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name != "images":
        return entries[0], entries[0].name + "/"
    return folder, ""


def check_dataset(
    folder: Path, prefix: str = "", size: tuple[int, int] = IMAGE_SIZE
) -> DatasetCheck:
    """Check the dataset in `folder` and remove from it what a trainer cannot use.

    Args:
        folder: the dataset folder; changed in place.
        prefix: put before each reported file name (where the folder sat in an archive).
        size: (height, width) every image must have.

    Returns:
        What was kept, and every problem found, in folder order.
    """
    check = DatasetCheck()
    report = check.problems.append
    for path in sorted(folder.iterdir()):
        if _clutter(path.name):
            _remove(path)
        elif not (
            path.is_dir() if path.name == "images" else path.name in KEPT_FILES and path.is_file()
        ):
            report(Problem(prefix + path.name, None, f"not part of a dataset ({LAYOUT}); left out"))
            _remove(path)
    images = folder / "images"
    kept = _check_images(images, prefix, size, report) if images.is_dir() else []
    if not images.is_dir():
        report(Problem(prefix + "images/", None, f"no images/ folder ({LAYOUT})"))
    check.images = len(kept)
    captioned = _check_captions(folder / CAPTIONS, set(kept), prefix, report)
    check.captions = sum(captioned.values())
    if (folder / CAPTIONS).is_file():
        for name in kept:
            if not captioned.get(name):
                report(
                    Problem(
                        f"{prefix}images/{name}", None,
                        f"no caption in {CAPTIONS}: only the image tokenizer trains on it",
                    )
                )  # fmt: skip
    return check


def _check_images(images: Path, prefix: str, size: tuple[int, int], report: Any) -> list[str]:
    """Names of the usable images in `images/`; the rest are removed and reported."""
    kept = []
    height, width = size
    for path in sorted(images.iterdir()):
        where = f"{prefix}images/{path.name}"
        if _clutter(path.name) or path.name.startswith("._"):  # AppleDouble files
            _remove(path)
            continue
        if path.is_dir():
            message = "a folder inside images/ (trainers read images/ only, not subfolders)"
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            message = f"not an image file (expected {', '.join(sorted(IMAGE_SUFFIXES))})"
        else:
            message = _image_problem(path, width, height)
        if message is None:
            kept.append(path.name)
        else:
            report(Problem(where, None, message + "; left out"))
            _remove(path)
    return kept


def _image_problem(path: Path, width: int, height: int) -> str | None:
    """What makes the image unusable, or None. Decoded only at the right size, so a huge
    declared size is never decompressed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.size != (width, height):
                    return f"image is {img.size[0]}x{img.size[1]}, expected {width}x{height}"
                img.load()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:  # fmt: skip
        return f"unreadable image ({e})"
    return None


def _check_captions(path: Path, images: set[str], prefix: str, report: Any) -> dict[str, int]:
    """Keep the caption lines that name a usable image; returns lines kept per image."""
    where = prefix + CAPTIONS
    if not path.is_file():
        report(Problem(where, None, f"no {CAPTIONS}: only the image tokenizer can train on this"))
        return {}
    lines, problems = utf8_lines(path.read_bytes())
    counts: dict[str, int] = {}
    kept = []
    for lineno, row in parse_jsonl(lines, ("image", "caption")):
        message = row if isinstance(row, str) else _caption_problem(row, images)
        if message is None:
            counts[row["image"]] = counts.get(row["image"], 0) + 1  # type: ignore[index]
            kept.append(lines[lineno - 1])
        else:
            problems[lineno] = message
    for lineno in sorted(problems):
        report(Problem(where, lineno, problems[lineno] + "; line left out"))
    if kept != lines:
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return counts


def _caption_problem(row: dict[str, Any], images: set[str]) -> str | None:
    captions = row["caption"] if isinstance(row["caption"], list) else [row["caption"]]
    if not isinstance(row["image"], str) or not all(isinstance(c, str) for c in captions):
        return "'image' and 'caption' must be strings ('caption' may be a list of strings)"
    if row["image"] not in images:
        return f"image {row['image']!r} is not among the usable images in images/"
    return None


def _clutter(name: str) -> bool:
    return name in MAC_CLUTTER


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
