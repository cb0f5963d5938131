"""GET /openapi.json: built from the same schema dicts that validate requests."""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from service.api.jobs import LIST_PARAMETERS
from service.auth import PUBLIC_PATHS
from service.state import state
from workers.jobstore.views import WEBHOOK_STATUSES

bp = Blueprint("openapi", __name__)

JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
INDEX = {
    "name": "index",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}

ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"description": "e.g. {fields: {name: problem}} for 400"},
            },
        }
    },
}
ACCEPTED = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string"},
        "position": {"type": "integer", "nullable": True},
        "eta_seconds": {"type": "number", "nullable": True},
        "links": {"type": "object"},
    },
}
JOB = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": ["generate", "train"]},
        "status": {
            "type": "string",
            "enum": ["queued", "running", "succeeded", "failed", "canceled"],
        },
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "position": {"type": "integer", "nullable": True},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": {"type": "string", "format": "date-time", "nullable": True},
        "finished_at": {"type": "string", "format": "date-time", "nullable": True},
        "attempts": {"type": "integer"},
        "cancel_requested": {"type": "boolean"},
        "request": {"type": "object"},
        "error": {"type": "object", "nullable": True},
        "output": {
            "type": "object",
            "nullable": True,
            "description": "images [{index, seed, url, codes_url}], model, model_version, "
            "timings, peak_memory_bytes",
        },
        "webhook": {
            "type": "object",
            "nullable": True,
            "description": "null without a webhook; else whether it was sent",
            "properties": {
                "status": {"type": "string", "enum": list(WEBHOOK_STATUSES)},
                "detail": {"type": "string", "nullable": True},
            },
        },
        "links": {"type": "object"},
    },
}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _submit(summary: str, schema: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        },
        "responses": {
            "202": _json("Accepted", "queued (or the earlier job for a reused Idempotency-Key)"),
            "400": _err("invalid fields, each named in details.fields"),
            "413": _err("body too large"),
            "415": _err("body is not application/json"),
            "422": _err("Idempotency-Key reused with a different body"),
            "429": _err("queue full, or this key's rate limit; see Retry-After"),
            "503": _err("Redis unreachable"),
        },
    }


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of this app."""
    st = state()
    schemas = {name: copy.deepcopy(schema) for name, schema in st.schemas.items()}
    schemas.update({"Error": ERROR, "Accepted": ACCEPTED, "Job": JOB})
    list_params = [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in LIST_PARAMETERS.items()
    ]
    paths = {
        "/v1/generations": {"post": _submit("Queue a text-to-pixel-art job", "GenerationRequest")},
        "/v1/trainings": {"post": _submit("Queue a training job", "TrainingRequest")},
        "/v1/jobs": {
            "get": {
                "summary": "List recent jobs, newest first",
                "parameters": list_params,
                "responses": {
                    "200": {"description": "{jobs: [Job], next_cursor}"},
                    "400": _err("bad query"),
                },
            }
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "Job status and output",
                "parameters": [JOB_ID],
                "responses": {
                    "200": _json("Job", "the job"),
                    "404": _err("unknown job, or another key's"),
                },
            },
            "delete": {
                "summary": "Cancel a job",
                "parameters": [JOB_ID],
                "responses": {
                    "200": _json("Job", "canceled"),
                    "202": _json("Job", "running: stops at its next step"),
                    "404": _err("unknown job, or another key's"),
                    "409": _err("already finished"),
                },
            },
        },
        "/v1/jobs/{job_id}/images/{index}.png": {
            "get": {
                "summary": "A generated image",
                "parameters": [JOB_ID, INDEX],
                "responses": {
                    "200": {"description": "PNG", "content": {"image/png": {}}},
                    "404": _err("no such image"),
                },
            }
        },
        "/v1/jobs/{job_id}/codes/{index}.json": {
            "get": {
                "summary": "An image's code grid",
                "parameters": [JOB_ID, INDEX],
                "responses": {
                    "200": {"description": "code grid JSON"},
                    "404": _err("no such image"),
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "Models served",
                "responses": {"200": {"description": "{models: [...]}"}},
            }
        },
        "/v1/health": {
            "get": {
                "summary": "Redis, queues and workers (always 200)",
                "security": [],
                "responses": {"200": {"description": "health"}},
            }
        },
    }
    _add_auth_responses(paths)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pixelscene",
            "version": "1",
            "description": "Text to 320x200 pixel-art scenes.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}] if st.settings.keys_configured else [],
    }


def _required_roles() -> dict[tuple[str, str], str]:
    """(OpenAPI path, method) -> the role its view requires (`@requires`), from the app."""
    roles = {}
    for rule in current_app.url_map.iter_rules():
        role = getattr(current_app.view_functions[rule.endpoint], "required_role", None)
        if role:
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            for method in rule.methods or ():
                roles[(path, method.lower())] = role
    return roles


def _add_auth_responses(paths: dict[str, Any]) -> None:
    """401 and the per-key 429 on every operation that takes a key; 403 where a view
    requires a role above generate."""
    roles = _required_roles()
    for path, operations in paths.items():
        if path in PUBLIC_PATHS:
            continue
        for method, op in operations.items():
            responses = op["responses"]
            responses.setdefault("401", _err("missing or wrong API key"))
            role = roles.get((path, method))
            if role:
                op["description"] = f"Needs a key with the {role} role."
                responses["403"] = _err(f"the key lacks the {role} role (details.required_role)")
            responses.setdefault("429", _err("this key's rate limit (by role); see Retry-After"))
            op["responses"] = dict(sorted(responses.items()))


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document."""
    return jsonify(build_document())
