"""The JSON the API answers with, as JSON Schema 2020-12: `/openapi.json` documents these,
and the schemathesis tests check every response against them."""

from __future__ import annotations

from typing import Any

from service.api.jobs import LIST_PARAMETERS
from workers.jobstore.queues import QUEUES
from workers.jobstore.records import STATUSES
from workers.jobstore.views import WEBHOOK_STATUSES


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


TIMESTAMP = {"type": "string", "format": "date-time"}
LINKS = {
    "type": "object",
    "required": ["self"],
    "properties": {"self": {"type": "string", "description": "this job's URL"}},
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"description": "e.g. {fields: {name: problem}} for 400, else null"},
            },
        }
    },
}
ACCEPTED = {
    "type": "object",
    "required": ["id", "status", "position", "eta_seconds", "links"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "status": {"type": "string", "enum": list(STATUSES)},
        "position": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "jobs ahead of this one in its queue (0 = next); null once started",
        },
        "eta_seconds": {"type": ["number", "null"], "minimum": 0},
        "links": LINKS,
    },
}
TRAINING = {
    "type": "object",
    "description": "a training's progress (kind train only)",
    "required": [
        "phase", "phases", "step", "total", "losses", "items_per_second", "unit",
        "eta_seconds", "eval", "resumed_from", "stopped_at", "sample_url",
    ],
    "properties": {
        "phase": {"type": ["string", "null"], "description": "the stage running (of phases)"},
        "phases": {"type": ["array", "null"], "items": {"type": "string"}},
        "step": {"type": ["integer", "null"], "minimum": 0},
        "total": {"type": ["integer", "null"], "minimum": 0},
        "losses": {"type": ["object", "null"], "description": "the last logged step's"},
        "items_per_second": {"type": ["number", "null"]},
        "unit": {"type": ["string", "null"], "description": "what items are: img, tokens"},
        "eta_seconds": {"type": ["number", "null"], "description": "to the phase's end"},
        "eval": {"type": ["object", "null"], "description": "the latest held-out metrics"},
        "resumed_from": {
            "type": ["integer", "null"],
            "description": "the checkpoint's step this try resumed from (its worker died)",
        },
        "stopped_at": {"type": ["integer", "null"], "description": "where a cancel stopped it"},
        "sample_url": {"type": ["string", "null"], "description": "the latest sample grid"},
    },
}  # fmt: skip
JOB = {
    "type": "object",
    "required": [
        "id", "kind", "status", "progress", "position", "created_at", "started_at",
        "finished_at", "attempts", "cancel_requested", "request", "error", "output",
        "webhook", "links",
    ],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "kind": {"type": "string", "enum": list(QUEUES)},
        "status": {"type": "string", "enum": list(STATUSES)},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "position": {"type": ["integer", "null"], "minimum": 0},
        "created_at": nullable(TIMESTAMP),
        "started_at": nullable(TIMESTAMP),
        "finished_at": nullable(TIMESTAMP),
        "attempts": {"type": "integer", "minimum": 0},
        "cancel_requested": {"type": "boolean"},
        "request": {"type": ["object", "null"], "description": "the request, defaults filled in"},
        "error": {
            "type": ["object", "null"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "output": {
            "type": ["object", "null"],
            "description": "images [{index, seed, url, codes_url}], model, model_version, "
            "timings, peak_memory_bytes; a training's: stage, dataset, config, steps, "
            "metrics, and model (name@version) once registered, or stopped_at if canceled",
            "properties": {
                "images": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"type": "integer", "minimum": 0},
                            "seed": {"type": "integer"},
                            "url": {"type": "string"},
                            "codes_url": {"type": "string"},
                        },
                    },
                }
            },
        },
        "webhook": {
            "type": ["object", "null"],
            "description": "null without a webhook; else whether it was sent",
            "required": ["status", "detail"],
            "properties": {
                "status": {"type": "string", "enum": list(WEBHOOK_STATUSES)},
                "detail": {"type": ["string", "null"]},
            },
        },
        "links": LINKS,
        "training": TRAINING,
    },
}  # fmt: skip
JOB_LIST = {
    "type": "object",
    "required": ["jobs", "next_cursor"],
    "properties": {
        "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
        "next_cursor": {
            "type": ["string", "null"],
            "pattern": LIST_PARAMETERS["cursor"]["pattern"],
            "description": "pass as `cursor` for the next page; null on the last one",
        },
    },
}
MODEL_VERSION = {
    "type": "object",
    "required": [
        "version", "ref", "content_version", "created_at", "job_id", "stage", "preset",
        "dataset", "base_model", "steps", "metrics", "generates", "files",
    ],
    "properties": {
        "version": {"type": "integer", "minimum": 1},
        "ref": {"type": "string", "description": "name@version, as requests name it"},
        "content_version": {"type": "string", "description": "a hash of config and weights"},
        "created_at": {"type": "number", "description": "Unix time"},
        "job_id": {"type": "string", "description": "the training that made it"},
        "stage": {"type": "string"},
        "preset": {"type": ["string", "null"]},
        "dataset": {"type": "string"},
        "base_model": {"type": ["string", "null"]},
        "steps": {"type": "object", "description": "steps of each stage it ran"},
        "metrics": {
            "type": "object",
            "description": "each stage's last held-out evaluation (psnr, eval_loss, ...)",
        },
        "generates": {"type": "boolean", "description": "false: an image tokenizer only"},
        "files": {"type": "array", "items": {"type": "string"}},
    },
}  # fmt: skip
MODEL_LIST = {
    "type": "object",
    "required": ["models"],
    "properties": {
        "models": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "name", "default", "available", "version", "config", "bundled", "latest",
                    "versions",
                ],
                "properties": {
                    "name": {"type": "string"},
                    "default": {"type": "boolean"},
                    "available": {"type": "boolean", "description": "whether it can generate"},
                    "version": {
                        "type": ["string", "null"],
                        "description": "content version of what `model: name` runs",
                    },
                    "config": {"type": ["string", "null"]},
                    "bundled": {
                        "type": "boolean",
                        "description": "a model of the server's settings: served as it is, "
                        "without numbered versions, never deleted",
                    },
                    "latest": {"type": ["integer", "null"], "minimum": 1},
                    "versions": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/ModelVersion"},
                        "description": "a trained model's versions, oldest first",
                    },
                },
            },
        }
    },
}  # fmt: skip
QUEUE_HEALTH = {
    "type": "object",
    "required": ["queued", "running"],
    "properties": {
        "queued": {"type": "integer", "minimum": 0},
        "running": {"type": "integer", "minimum": 0},
    },
}
HEALTH = {
    "type": "object",
    "required": ["status", "redis", "queues", "worker_count"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "redis": {
            "type": "object",
            "required": ["reachable"],
            "properties": {
                "reachable": {"type": "boolean"},
                "error": {"type": "string", "description": "admin keys only"},
            },
        },
        "queues": {"type": "object", "additionalProperties": QUEUE_HEALTH},
        "worker_count": {"type": "integer", "minimum": 0},
        "workers": {
            "type": "array",
            "description": "admin keys only (and localhost without keys)",
            "items": {"type": "object"},
        },
    },
}
PROBLEM = {
    "type": "object",
    "required": ["file", "line", "message"],
    "properties": {
        "file": {"type": "string", "description": "as named in the archive"},
        "line": {"type": ["integer", "null"], "minimum": 1},
        "message": {"type": "string", "description": "what is wrong, and what was left out"},
    },
}
_DATASET_FIELDS = {
    "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "name": {"type": ["string", "null"]},
    "images": {"type": "integer", "minimum": 1, "description": "usable images kept"},
    "captions": {"type": "integer", "minimum": 0, "description": "caption lines kept"},
    "problem_count": {"type": "integer", "minimum": 0},
    "bytes": {"type": "integer", "minimum": 0},
    "created": TIMESTAMP,
    "links": {
        "type": "object",
        "required": ["self"],
        "properties": {"self": {"type": "string", "description": "this dataset's URL"}},
    },
}
DATASET = {
    "type": "object",
    "required": [*_DATASET_FIELDS, "problems"],
    "properties": {
        **_DATASET_FIELDS,
        "problems": {
            "type": "array",
            "items": PROBLEM,
            "description": "the first 1000 problems; problem_count has them all",
        },
    },
}
DATASET_LIST = {
    "type": "object",
    "required": ["datasets"],
    "properties": {
        "datasets": {
            "type": "array",
            "description": "newest first, without their problems",
            "items": {
                "type": "object",
                "required": list(_DATASET_FIELDS),
                "properties": _DATASET_FIELDS,
            },
        }
    },
}
