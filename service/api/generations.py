"""POST /v1/generations and /v1/trainings: validate, deduplicate, enqueue, answer 202."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.api.common import eta_seconds, json_body, queue_figures, retry_after
from service.auth import client_scope, requires
from service.errors import ApiError
from service.schemas import SEED_LIMIT, ValidationError, check_value, rule_errors, validate
from service.state import state
from workers.jobstore import models
from workers.jobstore.datasets import DatasetNotFoundError, dataset_dir, valid_dataset_id
from workers.jobstore.hooks import refused_literal
from workers.jobstore.queues import GENERATE, TRAIN, enqueue_job
from workers.jobstore.records import get_job
from workers.jobstore.views import job_links

bp = Blueprint("generations", __name__)
IDEMPOTENCY_KEY_MAX = 255
# The header's value as the server checks it and /openapi.json documents it.
IDEMPOTENCY_KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": IDEMPOTENCY_KEY_MAX,
    "pattern": rf"^[ -~]{{1,{IDEMPOTENCY_KEY_MAX}}}$",
    "description": (
        f"1..{IDEMPOTENCY_KEY_MAX} printable ASCII characters. The same key with the same "
        "body within the server's idempotency TTL (a day by default) answers 202 with the "
        "job the first request queued (header Idempotent-Replayed: true) instead of queueing "
        "another; with a different body, 422. Keys are scoped by API key."
    ),
}


@bp.post("/generations")
def create_generation() -> tuple[Response, int]:
    """Queue a generation job; 202 with its id, queue position and ETA."""
    return _submit(GENERATE, "GenerationRequest")


@bp.post("/trainings")
@requires("admin")
def create_training() -> tuple[Response, int]:
    """Queue a training job; with a `name`, its result becomes that model's next version."""
    return _submit(TRAIN, "TrainingRequest")


def _submit(kind: str, schema_name: str) -> tuple[Response, int]:
    st = state()
    params = validate(st.schemas[schema_name], json_body())
    if params.get("webhook") and not st.settings.webhook_secret:
        raise ValidationError(
            {"webhook": "webhooks are disabled on this server (no PIXELSCENE_WEBHOOK_SECRET)"}
        )
    if params.get("webhook"):
        refused = refused_literal(params["webhook"], st.settings.webhook_private_networks)
        if refused:
            raise ValidationError({"webhook": f"refused: {refused}"})
    broken = rule_errors(st.schemas[schema_name], params)
    if broken:
        raise ValidationError(broken)
    body_hash = hashlib.sha256(
        json.dumps([kind, params], sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    if kind == GENERATE and "seed" not in params:
        # Chosen now, so a job re-run after a worker died paints the same images.
        params["seed"] = secrets.randbelow(SEED_LIMIT)

    idem_key = _idempotency_key()
    if idem_key is not None:
        replay = _replay(idem_key, body_hash)
        if replay is not None:
            return replay
    resolve_models(kind, params)  # after the hash: the same body later is the same request

    r = st.redis
    depth, workers, mean = queue_figures(kind)
    if depth >= st.settings.max_queue:
        raise ApiError(
            429, "queue_full",
            f"{depth} jobs are queued (limit {st.settings.max_queue}); retry later",
            headers={"Retry-After": retry_after(depth, st.settings.max_queue, workers, mean)},
        )  # fmt: skip

    job_id = uuid.uuid4().hex
    if idem_key is not None:
        claimed = r.set(
            idem_key,
            json.dumps({"hash": body_hash, "job_id": job_id}),
            nx=True,
            ex=st.settings.idempotency_ttl,
        )
        if not claimed:  # a concurrent request with the same key won the race
            replay = _replay(idem_key, body_hash)
            if replay is not None:
                return replay
    try:
        enqueue_job(
            r, st.settings, kind, job_id, params, queue=st.queue(kind), owner=client_scope()
        )
    except Exception:
        if idem_key is not None:
            r.delete(idem_key)
        raise
    return jsonify(_accepted(job_id, "queued", depth, workers, mean)), 202


def resolve_models(kind: str, params: dict[str, Any]) -> None:
    """Pin the model a request names to a version now (`name` -> `name@3`), so the job runs
    on the version that was newest when it was queued and a version's deletion sees it; 422
    for a name or version that does not exist, a training that would take a bundled model's
    name, or an uploaded dataset's id that names none."""
    settings = state().settings
    field = "model" if kind == GENERATE else "base_model"
    problems = {}
    if params.get(field):
        try:
            ref = models.resolve(settings.objects_dir, settings.models, params[field])
        except models.ModelNotFoundError as e:
            problems[field] = str(e)
        else:
            params[field] = ref.ref
            if kind == GENERATE and ref.version is not None:
                doc = models.read_version(ref.folder) or {}
                if not doc.get("generates"):
                    problems[field] = (
                        f"{ref.ref} is an image tokenizer without a transformer: it cannot "
                        "generate (train one on it: stage transformer, base_model " + ref.ref + ")"
                    )
    if kind == TRAIN and params.get("name") in settings.models:
        problems["name"] = f"{params['name']!r} is a bundled model's name: pick another"
    if kind == TRAIN and valid_dataset_id(params["dataset"]):
        try:  # an uploaded dataset's id (other names are folders only workers can see)
            dataset_dir(settings, params["dataset"])
        except DatasetNotFoundError:
            problems["dataset"] = f"no uploaded dataset {params['dataset']}"
    if problems:
        codes = {"dataset": "unknown_dataset", "name": "model_name_taken"}
        raise ApiError(
            422, codes.get(next(iter(problems)), "unknown_model"),
            "; ".join(f"{k}: {v}" for k, v in problems.items()), details={"fields": problems},
        )  # fmt: skip


def _accepted(
    job_id: str, status: str, position: int | None, workers: int, mean: float
) -> dict[str, Any]:
    return {
        "id": job_id,
        "status": status,
        "position": position,
        "eta_seconds": eta_seconds(position, workers, mean) if position is not None else None,
        "links": job_links(job_id),
    }


def _idempotency_key() -> str | None:
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    if check_value(IDEMPOTENCY_KEY_SCHEMA, raw):
        raise ApiError(
            400, "invalid_idempotency_key",
            f"Idempotency-Key must be 1..{IDEMPOTENCY_KEY_MAX} printable ASCII characters",
        )  # fmt: skip
    digest = hashlib.sha256(raw.encode()).hexdigest()
    return state().keys.idempotency(client_scope(), digest)


def _replay(idem_key: str, body_hash: str) -> tuple[Response, int] | None:
    """The earlier answer for a reused key with the same body; 422 for a different body."""
    st = state()
    stored = st.redis.get(idem_key)
    if stored is None:
        return None
    doc = json.loads(stored)
    if doc["hash"] != body_hash:
        raise ApiError(
            422, "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        )  # fmt: skip
    rec = get_job(st.redis, st.keys, doc["job_id"])
    status = rec["status"] if rec else "queued"
    kind = rec.get("kind", GENERATE) if rec else GENERATE
    position = None
    if status == "queued":
        position = st.queue(kind).get_job_position(doc["job_id"])
    _, workers, mean = queue_figures(kind)
    response = jsonify(_accepted(doc["job_id"], status, position, workers, mean))
    response.headers["Idempotent-Replayed"] = "true"
    return response, 202
