"""GET /v1/models (every model with its versions), one version, its files, and deleting one.

The configured models (`PIXELSCENE_MODELS`, the bundled one among them) are served as they
are; trained models have numbered versions in the object directory
(`workers.jobstore.models`). A version can be deleted while no queued or running job names
it; configured models cannot be.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, send_file
from rq.registry import StartedJobRegistry

from service.auth import WORKER, requires
from service.errors import ApiError
from service.state import state
from workers.jobstore import models
from workers.jobstore.queues import QUEUES
from workers.jobstore.records import decode_record

bp = Blueprint("models", __name__)
_versions: dict[tuple[str, float], str] = {}
_versions_lock = threading.Lock()


@bp.get("/models")
def list_models() -> Response:
    """Every model: the configured ones, then the trained ones with their versions."""
    settings = state().settings
    out = []
    for name, folder in sorted(settings.models.items()):
        out.append(
            {
                "name": name,
                "default": name == settings.default_model,
                **_describe(folder),
                "bundled": True,
                "latest": None,
                "versions": [],
            }
        )
    for name in models.trained_names(settings.objects_dir):
        if name not in settings.models:  # a configured model shadows a folder of its name
            out.append(_trained(name))
    return jsonify({"models": out})


@bp.get("/models/<name>/<version>")
@requires(WORKER)
def get_version(name: str, version: str) -> Response:
    """One version of a trained model: how it was made, its metrics and its files."""
    return jsonify(models.public_view(_version(name, version)))


@bp.get("/models/<name>/<version>/files/<filename>")
@requires(WORKER)
def get_file(name: str, version: str, filename: str) -> Response:
    """One file of a version (workers without the object directory fetch them so)."""
    doc = _version(name, version)
    if filename not in doc.get("files", {}) and filename not in (models.RECORD, models.CARD):
        raise ApiError(404, "file_not_found", f"{doc['ref']} has no file {filename!r}")
    path = models.version_dir(state().settings.objects_dir, name, version) / filename
    mimetype = "text/markdown" if filename.endswith(".md") else "application/octet-stream"
    if filename.endswith(".json"):
        mimetype = "application/json"
    return send_file(path, mimetype=mimetype, max_age=86400, conditional=True)


@bp.delete("/models/<name>/<version>")
@requires("admin")
def delete_version(name: str, version: str) -> tuple[str, int]:
    """Delete a version no queued or running job names (409 otherwise, and for bundled
    models)."""
    settings = state().settings
    if name in settings.models:
        raise ApiError(409, "bundled_model", f"{name!r} is a bundled model: it cannot be deleted")
    doc = _version(name, version)
    number = doc["version"]
    # Out of sight first, so no new job can name it while the queues are searched.
    hidden = models.hide(settings.objects_dir, name, number)
    users = jobs_naming(doc["ref"])
    if users:
        models.unhide(hidden, settings.objects_dir, name, number)
        raise ApiError(
            409, "model_in_use",
            f"{doc['ref']} is named by {len(users)} queued or running job(s): delete it once "
            "they end (or cancel them)",
            details={"jobs": users[:20]},
        )  # fmt: skip
    shutil.rmtree(hidden, ignore_errors=True)
    return "", 204


def jobs_naming(ref: str) -> list[str]:
    """Ids of the queued and running jobs whose request names `ref` (a generation's model,
    a training's base model), both pinned to `name@version` when queued."""
    st = state()
    ids: list[str] = []
    for kind in QUEUES:
        queue = st.queue(kind)
        ids += queue.get_job_ids() + StartedJobRegistry(queue=queue).get_job_ids()
    with st.redis.pipeline(transaction=False) as p:
        for job_id in ids:
            p.hgetall(st.keys.job(job_id))
        raws = p.execute()
    users = []
    for job_id, raw in zip(ids, raws, strict=True):
        if not raw:
            continue
        rec = decode_record(job_id, raw)
        request = rec.get("request") or {}
        named = (request.get("model"), request.get("base_model"))
        if rec["status"] in ("queued", "running") and ref in named:
            users.append(job_id)
    return users


def _version(name: str, version: str) -> dict[str, Any]:
    """A complete version's record, or 404."""
    settings = state().settings
    try:
        folder = models.version_dir(settings.objects_dir, name, version)
    except models.ModelNotFoundError:
        raise ApiError(404, "model_not_found", f"no model version {name}@{version}") from None
    doc = models.read_version(folder)
    if doc is None or name in settings.models:
        raise ApiError(404, "model_not_found", f"no model version {name}@{version}")
    return doc


def _trained(name: str) -> dict[str, Any]:
    known = models.versions(state().settings.objects_dir, name)
    latest = known[-1]
    return {
        "name": name,
        "default": False,
        "available": bool(latest.get("generates")),
        "version": latest.get("content_version"),
        "config": latest.get("preset"),
        "bundled": False,
        "latest": latest["version"],
        "versions": [models.public_view(doc) for doc in known],
    }


def _describe(folder: str) -> dict[str, Any]:
    """A configured model's availability, content version and config name."""
    from pixelscene.model_io import BUNDLED_MODEL_DIR

    path = Path(folder) if folder else BUNDLED_MODEL_DIR
    config_file = path / "config.json"
    if not config_file.is_file():
        return {"available": False, "version": None, "config": None}
    try:
        config_name = json.loads(config_file.read_text()).get("name")
    except (OSError, ValueError):
        config_name = None
    stamp = max((f.stat().st_mtime for f in path.iterdir()), default=0.0)
    with _versions_lock:
        key = (str(path), stamp)
        if key not in _versions:
            from pixelscene.model_io import model_version

            try:
                _versions[key] = model_version(path)
            except Exception:
                return {"available": False, "version": None, "config": config_name}
        return {"available": True, "version": _versions[key], "config": config_name}
