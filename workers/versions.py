"""A trained model version on a worker: the shared object directory's folder, or a local copy
fetched from the API by a worker that cannot see it (`results_url` and `worker_key`).

The copy is fetched file by file (`GET /v1/models/<name>/<version>/files/<file>`), each
checked against the SHA-256 the version's record lists, into a temporary folder beside the
versions that is then renamed into place, so a half-fetched copy is never loaded. Versions
never change, so a copy stays valid for every later job.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from pixelscene.errors import ModelLoadError
from workers.jobstore import models
from workers.settings import Settings

CHUNK = 1 << 20


def version_folder(settings: Settings, ref: str) -> Path:
    """The folder of a trained model version (`name@3`, or `name` for its newest here).

    Raises:
        ModelLoadError: no such version here, nor (with `results_url`) on the API.
    """
    try:
        name, version = models.split_ref(ref)
        if version is None:
            return models.resolve(settings.objects_dir, (), ref).folder  # type: ignore[return-value]
        folder = models.version_dir(settings.objects_dir, name, version)
    except models.ModelNotFoundError as e:
        raise ModelLoadError(str(e)) from None
    if models.read_version(folder) is not None:
        return folder
    if not settings.results_url:
        raise ModelLoadError(f"model version {ref} is not in the object directory")
    return fetch_version(settings, name, version)


def fetch_version(settings: Settings, name: str, version: int) -> Path:
    """Copy a version from the API into this worker's object directory; returns its folder."""
    from workers.results import ResultsError, call_api

    folder = models.version_dir(settings.objects_dir, name, version)
    base = f"/v1/models/{name}/{version}/files"
    incoming = folder.with_name(f".incoming-{uuid.uuid4().hex[:8]}")
    incoming.mkdir(parents=True)
    try:
        try:
            with call_api(settings, "GET", f"{base}/{models.RECORD}", f"{name}@{version}",
                          f"fetch model version {name}@{version} from") as resp:  # fmt: skip
                record = json.loads(resp.read())
            for filename, meta in sorted(record["files"].items()):
                _download(settings, f"{base}/{filename}", incoming / filename, meta["sha256"])
            _download(settings, f"{base}/{models.CARD}", incoming / models.CARD, None)
        except ResultsError as e:
            raise ModelLoadError(f"could not fetch model version {name}@{version}: {e}") from e
        (incoming / models.RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
        try:
            os.replace(incoming, folder)
        except OSError:  # another job of this worker's machine fetched it meanwhile
            if models.read_version(folder) is None:
                raise
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return folder


def _download(settings: Settings, path: str, target: Path, sha256: str | None) -> None:
    from workers.results import call_api

    digest = hashlib.sha256()
    with call_api(settings, "GET", path, target.name, f"fetch {target.name} from") as resp:
        with target.open("wb") as f:
            for chunk in iter(lambda: resp.read(CHUNK), b""):
                digest.update(chunk)
                f.write(chunk)
    if sha256 is not None and digest.hexdigest() != sha256:
        raise ModelLoadError(f"{target.name} arrived damaged (its SHA-256 does not match)")
