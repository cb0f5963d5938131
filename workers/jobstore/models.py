"""Trained models in the object directory: `OBJECTS/models/<name>/<version>/`.

A finished training with a `name` becomes the next version (1, 2, ...) of that model: a
model folder (`config.json`, `*.safetensors`, `tokenizer.json`) plus `MODEL_CARD.md` and
`version.json`, the version's record (`{name, version, ref, content_version, created_at,
job_id, stage, preset, dataset, base_model, steps, metrics, generates, files, request}`).
`version.json` is written last: a folder without it is a version still being written (or
one a crash left half-written) and is never listed or served. Versions never change once
written; a version is named `name@version`, and `name` alone means its newest version.

The models of the settings (`PIXELSCENE_MODELS`, the bundled one among them) are not
numbered: they are served as they are, and a training cannot take their names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelscene.errors import PixelsceneError
from workers.jobstore.objects import write_json_atomic

RECORD = "version.json"
CARD = "MODEL_CARD.md"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
VERSION_PATTERN = r"[1-9][0-9]{0,8}"
# What a request's `model` or `base_model` may be: a name, or name@version.
REF_PATTERN = rf"^{NAME_PATTERN}(@{VERSION_PATTERN})?$"
_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(VERSION_PATTERN)
# The files of a model folder a version keeps (checkpoints, logs and samples stay behind).
MODEL_FILES = re.compile(r"config\.json|tokenizer\.json|[A-Za-z0-9_-]{1,64}\.safetensors")


class ModelNotFoundError(PixelsceneError):
    """A model name or version that does not exist (or is not complete) here."""


@dataclass(frozen=True)
class ModelRef:
    """What a request's model reference resolved to: a configured model (`version` None,
    `folder` None for the bundled one) or a trained version."""

    name: str
    version: int | None
    folder: Path | None

    @property
    def ref(self) -> str:
        """How job records name it: `name` for a configured model, else `name@version`."""
        return self.name if self.version is None else f"{self.name}@{self.version}"


def models_root(objects_dir: str | os.PathLike) -> Path:
    return Path(objects_dir) / "models"


def version_dir(objects_dir: str | os.PathLike, name: str, version: int | str) -> Path:
    """The folder of one version; raises ModelNotFoundError for a name or version that
    cannot be one (so no request reaches outside the models folder)."""
    if not _NAME.fullmatch(name) or not _VERSION.fullmatch(str(version)):
        raise ModelNotFoundError(f"{name}@{version} is not a model version name")
    return models_root(objects_dir) / name / str(version)


def split_ref(ref: str) -> tuple[str, int | None]:
    """`name@3` -> ("name", 3); `name` -> ("name", None)."""
    name, sep, version = ref.partition("@")
    if not _NAME.fullmatch(name) or (sep and not _VERSION.fullmatch(version)):
        raise ModelNotFoundError(f"{ref!r} is not a model name (or name@version)")
    return name, int(version) if sep else None


def read_version(folder: Path) -> dict[str, Any] | None:
    """A version's record, or None while it is incomplete (or gone)."""
    try:
        return json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def versions(objects_dir: str | os.PathLike, name: str) -> list[dict[str, Any]]:
    """The records of a model's complete versions, oldest first ([] for an unknown name)."""
    if not _NAME.fullmatch(name):
        return []
    folder = models_root(objects_dir) / name
    numbers = _numbers(folder)
    docs = (read_version(folder / str(n)) for n in numbers)
    return [doc for doc in docs if doc is not None]


def trained_names(objects_dir: str | os.PathLike) -> list[str]:
    """Every name with at least one complete version, sorted."""
    root = models_root(objects_dir)
    if not root.is_dir():
        return []
    names = (p.name for p in root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))
    return sorted(n for n in names if versions(objects_dir, n))


def resolve(objects_dir: str | os.PathLike, configured: Iterable[str], ref: str) -> ModelRef:
    """A request's `model`: a configured name, a trained name (its newest version) or
    `name@version`. Raises ModelNotFoundError saying what exists."""
    name, version = split_ref(ref)
    configured = list(configured)
    if name in configured:
        if version is not None:
            raise ModelNotFoundError(
                f"model {name!r} is a bundled model without numbered versions: use {name!r}"
            )
        return ModelRef(name, None, None)
    known = versions(objects_dir, name)
    if not known:
        names = ", ".join(sorted(set(configured) | set(trained_names(objects_dir))))
        raise ModelNotFoundError(f"no model {name!r} (models: {names or 'none'})")
    numbers = [doc["version"] for doc in known]
    if version is None:
        version = numbers[-1]
    elif version not in numbers:
        listed = ", ".join(str(n) for n in numbers)
        raise ModelNotFoundError(f"model {name!r} has no version {version} (versions: {listed})")
    return ModelRef(name, version, version_dir(objects_dir, name, version))


def register(
    objects_dir: str | os.PathLike, name: str, staged: Path, doc: dict[str, Any]
) -> dict[str, Any]:
    """Make the model files of `staged` the next version of `name`; returns its record.

    `doc` describes it (job_id, stage, dataset, metrics, ...); the version number, file list,
    time and card are added here. A job registers once: a job id that already has a version
    (a retry after the first try registered, then died) gets that version back.
    """
    folder = models_root(objects_dir) / name
    version_dir(objects_dir, name, 1)  # checks the name
    job_id = doc.get("job_id")
    for known in versions(objects_dir, name):
        if job_id and known.get("job_id") == job_id:
            return known
    files = sorted(p for p in staged.iterdir() if p.is_file() and MODEL_FILES.fullmatch(p.name))
    if not any(p.name == "config.json" for p in files):
        raise PixelsceneError(f"{staged} holds no model (no config.json)")
    folder.mkdir(parents=True, exist_ok=True)
    while True:  # claim the next number: mkdir is atomic, also on a shared disk
        version = max(_numbers(folder), default=0) + 1
        target = folder / str(version)
        try:
            target.mkdir()
            break
        except FileExistsError:
            continue
    listed = {}
    for path in files:
        shutil.copyfile(path, target / path.name)
        listed[path.name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    record = {
        **doc,
        "name": name,
        "version": version,
        "ref": f"{name}@{version}",
        "created_at": time.time(),
        "files": listed,
    }
    (target / CARD).write_text(model_card(record), encoding="utf-8")
    write_json_atomic(target / RECORD, record)  # last: now the version exists
    return record


def hide(objects_dir: str | os.PathLike, name: str, version: int) -> Path:
    """Take a version out of sight (it stops resolving at once) before deleting it; returns
    where it went, for `unhide` or `shutil.rmtree`."""
    folder = version_dir(objects_dir, name, version)
    if read_version(folder) is None:
        raise ModelNotFoundError(f"model {name!r} has no version {version}")
    hidden = folder.with_name(f".deleting-{version}-{uuid.uuid4().hex[:8]}")
    os.replace(folder, hidden)
    return hidden


def unhide(hidden: Path, objects_dir: str | os.PathLike, name: str, version: int) -> None:
    os.replace(hidden, version_dir(objects_dir, name, version))


def public_view(doc: dict[str, Any]) -> dict[str, Any]:
    """A version's record as clients see it: no server paths, no file hashes."""
    keep = (
        "version", "ref", "content_version", "created_at", "job_id", "stage", "preset",
        "dataset", "base_model", "steps", "metrics", "generates",
    )  # fmt: skip
    out = {k: doc.get(k) for k in keep}
    out["files"] = sorted(doc.get("files") or {})
    return out


def model_card(doc: dict[str, Any]) -> str:
    """MODEL_CARD.md of a trained version: how it was made and what it measured."""
    lines = [
        f"# {doc['name']} version {doc['version']}",
        "",
        f"Trained by job `{doc.get('job_id')}`: stage `{doc.get('stage')}`, preset "
        f"`{doc.get('preset')}`, on dataset `{doc.get('dataset')}`"
        + (f", starting from `{doc['base_model']}`" if doc.get("base_model") else "")
        + f"; {doc.get('steps')} steps.",
        "",
        "It can generate images." if doc.get("generates") else (
            "An image tokenizer only: train a transformer on it (stage `transformer` with this "
            "version as `base_model`) to generate with it."
        ),
        "",
        "## Metrics",
        "",
    ]  # fmt: skip
    metrics = doc.get("metrics") or {}
    if not metrics:
        lines.append("None were measured.")
    for phase, row in metrics.items():
        figures = ", ".join(f"{k} {v}" for k, v in (row or {}).items() if k != "step")
        lines.append(f"- {phase}: {figures or 'none'}")
    lines += ["", "## Request", "", "```json", json.dumps(doc.get("request"), indent=2), "```", ""]
    return "\n".join(lines)


def _numbers(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if _VERSION.fullmatch(p.name))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
