"""The object directory: `OBJECTS/jobs/<id>/{0.png, codes_0.json, ..., result.json}`; a
training's job folder also holds its run (`run/`: data split, checkpoints, logs, the model)
and its latest `sample.png`.

Workers write every file atomically (temp file in the same folder + rename), so the API never
serves half a PNG; `result.json` is written last and marks a complete job folder. Job ids
are checked against the uuid-hex pattern before they touch a path.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pixelscene.model_io import atomic_write_bytes
from workers.jobstore.records import valid_job_id


class ObjectPathError(ValueError):
    """A job id or file index that cannot name a file in the object directory."""


def job_dir(objects_dir: str | os.PathLike, job_id: str) -> Path:
    """The folder of one job; raises for an id that is not 32 lowercase hex digits."""
    if not valid_job_id(job_id):
        raise ObjectPathError(f"invalid job id {job_id!r}")
    return Path(objects_dir) / "jobs" / job_id


def image_path(objects_dir: str | os.PathLike, job_id: str, index: int) -> Path:
    if not isinstance(index, int) or index < 0:
        raise ObjectPathError(f"invalid image index {index!r}")
    return job_dir(objects_dir, job_id) / f"{index}.png"


def codes_path(objects_dir: str | os.PathLike, job_id: str, index: int) -> Path:
    if not isinstance(index, int) or index < 0:
        raise ObjectPathError(f"invalid image index {index!r}")
    return job_dir(objects_dir, job_id) / f"codes_{index}.json"


def sample_path(objects_dir: str | os.PathLike, job_id: str) -> Path:
    """A training's latest sample grid."""
    return job_dir(objects_dir, job_id) / "sample.png"


def write_json_atomic(path: Path, doc: Any) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())


def collect_garbage(
    objects_dir: str | os.PathLike, older_than_days: float, dry_run: bool = False
) -> list[Path]:
    """Delete job folders whose newest file is older than the cutoff; returns those deleted."""
    root = Path(objects_dir) / "jobs"
    if not root.is_dir():
        return []
    cutoff = time.time() - older_than_days * 86400
    removed = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or not valid_job_id(folder.name):
            continue
        mtimes = [folder.stat().st_mtime] + [f.stat().st_mtime for f in folder.iterdir()]
        if max(mtimes) >= cutoff:
            continue
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
