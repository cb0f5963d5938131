"""GET /openapi.json: an OpenAPI 3.1 document built from the same schema dicts and rules
that validate requests (`service.schemas`, the list and header checks of `service.api`)."""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from service import responses
from service.api.datasets import NAME_SCHEMA
from service.api.generations import IDEMPOTENCY_KEY_SCHEMA
from service.api.internal import OBJECT_NAME
from service.api.jobs import LIST_PARAMETERS
from service.auth import INTERNAL_PREFIX, PUBLIC_PATHS
from service.state import state
from workers.jobstore import models

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
DATASET_ID = {
    "name": "dataset_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": IDEMPOTENCY_KEY_SCHEMA,
}


RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _err(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _submit(summary: str, schema: str) -> dict[str, Any]:
    accepted = _json("Accepted", "queued (or the earlier job for a reused Idempotency-Key)")
    accepted["headers"] = {
        "Idempotent-Replayed": {
            "description": "true when this answer replays an earlier request's",
            "schema": {"type": "string", "enum": ["true"]},
        }
    }
    return {
        "summary": summary,
        "parameters": [IDEMPOTENCY_KEY],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        },
        "responses": {
            "202": accepted,
            "400": _err(
                "invalid JSON, invalid fields (each named in details.fields) or an invalid "
                "Idempotency-Key"
            ),
            "413": _err("body too large"),
            "415": _err("body is not application/json"),
            "422": _err(
                "Idempotency-Key reused with a different body; an unknown model, version "
                "or uploaded dataset, or a bundled model's name (details.fields)"
            ),
            "429": _err("queue full, or this key's rate limit", RETRY_AFTER),
        },
    }


def _file(summary: str, media_type: str, what: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [JOB_ID, INDEX],
        "responses": {
            "200": {"description": what, "content": {media_type: {}}},
            "304": {"description": "not modified (If-None-Match, If-Modified-Since)"},
            "404": _err("no such job or image, or another key's job"),
        },
    }


def _upload() -> dict[str, Any]:
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{OBJECT_NAME.pattern}$"},
    }
    return {
        "summary": "A worker without the object directory hands over a result file",
        "description": "Only while the job runs on the worker named in X-Pixelscene-Worker; "
        "written atomically into the object directory (result.json last).",
        "parameters": [JOB_ID, name],
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        "responses": {
            "204": {"description": "stored"},
            "400": _err("not a result file name"),
            "404": _err("no such job"),
            "409": _err("the job is not running on this worker"),
            "413": _err("larger than PIXELSCENE_MAX_OBJECT_BYTES"),
            "507": _err("the object directory is full"),
        },
    }


BINARY = {"schema": {"type": "string", "format": "binary"}}
DATASET_UPLOAD = """A zip or tar.gz of `images/` (320x200 images) and `captions.jsonl` (one
`{"image": "<name in images/>", "caption": "<text>" or ["<text>", ...]}` a line), the layout
`pixelscene synth` writes, optionally inside one top-level folder (`mystyle/images/...`);
`attributes.jsonl` and `patterns.jsonl` are kept too. Send it as the body or as the
multipart field `file`. At most PIXELSCENE_DATASET_MAX_BYTES in the body and again
unpacked, and PIXELSCENE_DATASET_MAX_MEMBERS members.

Refused whole (details.member names the entry): members that would land outside the
dataset folder (`..`, absolute paths), symbolic and hard links, device files and FIFOs,
more bytes or members than the limits (whatever the headers declare: bytes are counted as
they are unpacked), corrupt archives. Nothing of a refused upload is kept.

Accepted with `problems` (file as named in the archive, line where one applies): images
that are unreadable or not 320x200 (their size is said) are left out, not resized, as is
anything that is not part of the layout; caption lines that are malformed, or name an image
that is missing or left out, are left out of captions.jsonl; images without a caption are
kept (the image tokenizer trains on images alone) and reported. With no usable image at
all, 422. Train on it with `POST /v1/trainings` naming its id as `dataset`."""


def _dataset_upload() -> dict[str, Any]:
    form = {
        "type": "object",
        "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}, "name": NAME_SCHEMA},
    }
    return {
        "summary": "Upload a dataset to train on",
        "description": DATASET_UPLOAD,
        "parameters": [{"name": "name", "in": "query", "required": False, "schema": NAME_SCHEMA}],
        "requestBody": {
            "required": True,
            "content": {
                "application/zip": BINARY,
                "application/gzip": BINARY,
                "multipart/form-data": {"schema": form},
            },
        },
        "responses": {
            "201": _json("Dataset", "stored; `problems` says what was left out"),
            "400": _err(
                "not an archive, a corrupt one, an unsafe member (details.member) or an "
                "invalid name"
            ),
            "413": _err("the body, its unpacked files or its members over the limits"),
            "415": _err("neither an archive body nor multipart/form-data"),
            "422": _err("no usable image (details.problems says why each file was left out)"),
            "507": _err("the object directory is full"),
        },
    }


def _dataset_paths() -> dict[str, Any]:
    return {
        "/v1/datasets": {
            "post": _dataset_upload(),
            "get": {
                "summary": "List the uploaded datasets, newest first",
                "responses": {"200": _json("DatasetList", "the datasets")},
            },
        },
        "/v1/datasets/{dataset_id}": {
            "get": {
                "summary": "A dataset, with the problems its upload reported",
                "parameters": [DATASET_ID],
                "responses": {
                    "200": _json("Dataset", "the dataset"),
                    "404": _err("unknown dataset"),
                },
            },
            "delete": {
                "summary": "Delete a dataset",
                "parameters": [DATASET_ID],
                "responses": {
                    "204": {"description": "deleted"},
                    "404": _err("unknown dataset"),
                    "409": _err("a queued or running training names it (details.jobs)"),
                },
            },
        },
        "/v1/internal/datasets/{dataset_id}/archive": {
            "get": {
                "summary": "A worker without the object directory fetches a dataset",
                "description": "The dataset's folder as an uncompressed tar.",
                "parameters": [DATASET_ID],
                "responses": {
                    "200": {
                        "description": "tar",
                        "content": {"application/x-tar": BINARY},
                    },
                    "404": _err("unknown dataset"),
                },
            }
        },
    }


MODEL_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{models.NAME_PATTERN}$"},
}
MODEL_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{models.VERSION_PATTERN}$"},
}


def _model_paths() -> dict[str, Any]:
    """Model versions, their files, and how a worker without the object directory hands a
    trained model over."""
    filename = {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}
    model_file = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^(?:{models.MODEL_FILES.pattern})$"},
    }
    missing = _err("no such model version")
    return {
        "/v1/models/{name}/{version}": {
            "get": {
                "summary": "One version of a trained model",
                "parameters": [MODEL_NAME, MODEL_VERSION],
                "responses": {"200": _json("ModelVersion", "the version"), "404": missing},
            },
            "delete": {
                "summary": "Delete a version",
                "parameters": [MODEL_NAME, MODEL_VERSION],
                "responses": {
                    "204": {"description": "deleted"},
                    "404": missing,
                    "409": _err(
                        "a bundled model, or a queued or running job names the "
                        "version (details.jobs)"
                    ),
                },
            },  # fmt: skip
        },
        "/v1/models/{name}/{version}/files/{filename}": {
            "get": {
                "summary": "A file of a version (config.json, weights, MODEL_CARD.md, "
                "version.json)",
                "parameters": [MODEL_NAME, MODEL_VERSION, filename],
                "responses": {
                    "200": {"description": "the file", "content": {"*/*": BINARY}},
                    "304": {"description": "not modified (If-None-Match, If-Modified-Since)"},
                    "404": _err("no such version or file"),
                },
            }
        },
        "/v1/jobs/{job_id}/sample.png": {
            "get": {
                "summary": "A training's latest sample grid",
                "parameters": [JOB_ID],
                "responses": {
                    "200": {"description": "PNG", "content": {"image/png": {}}},
                    "304": {"description": "not modified (If-None-Match, If-Modified-Since)"},
                    "404": _err("no such training, or no grid yet"),
                },
            }
        },
        "/v1/internal/jobs/{job_id}/model/{name}": {
            "put": {
                "summary": "A worker without the object directory hands over a model file",
                "description": "Only while the training runs on the worker named in "
                "X-Pixelscene-Worker.",
                "parameters": [JOB_ID, model_file],
                "requestBody": {"required": True, "content": {"application/octet-stream": BINARY}},
                "responses": {
                    "204": {"description": "stored"},
                    "400": _err("not a model file name"),
                    "404": _err("no such job"),
                    "409": _err("not a training running on this worker"),
                    "413": _err("larger than PIXELSCENE_MAX_MODEL_BYTES"),
                    "507": _err("the object directory is full"),
                },
            }
        },
        "/v1/internal/jobs/{job_id}/model": {
            "post": {
                "summary": "Make the handed-over model the next version of the training's model",
                "parameters": [JOB_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "201": _json("ModelVersionRecord", "the version's record"),
                    "400": _err("the body is not a JSON object"),
                    "404": _err("no such job"),
                    "409": _err("not a named training running on this worker, or no model"),
                    "415": _err("body is not application/json"),
                    "507": _err("the object directory is full"),
                },
            }
        },
    }


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this app."""
    st = state()
    schemas = {name: copy.deepcopy(schema) for name, schema in st.schemas.items()}
    schemas.update(
        {
            "Error": responses.ERROR, "Accepted": responses.ACCEPTED, "Job": responses.JOB,
            "JobList": responses.JOB_LIST, "ModelList": responses.MODEL_LIST,
            "Health": responses.HEALTH, "Dataset": responses.DATASET,
            "DatasetList": responses.DATASET_LIST, "ModelVersion": responses.MODEL_VERSION,
            "ModelVersionRecord": {"type": "object", "required": ["name", "version", "ref"]},
        }
    )  # fmt: skip
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
                    "200": _json("JobList", "a page of jobs"),
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
                    "202": _json(
                        "Job",
                        "running: stops at its next step (a training keeps its last checkpoint)",
                    ),
                    "404": _err("unknown job, or another key's"),
                    "409": _err("already finished"),
                },
            },
        },
        "/v1/jobs/{job_id}/images/{index}.png": {
            "get": _file("A generated image", "image/png", "PNG")
        },
        "/v1/jobs/{job_id}/codes/{index}.json": {
            "get": _file("An image's code grid", "application/json", "code grid JSON")
        },
        "/v1/internal/jobs/{job_id}/objects/{name}": {"put": _upload()},
        **_dataset_paths(),
        "/v1/models": {
            "get": {
                "summary": "Every model, the bundled ones and the trained ones with their "
                "versions and metrics",
                "responses": {"200": _json("ModelList", "the models")},
            }
        },
        **_model_paths(),
        "/v1/health": {
            "get": {
                "summary": "Redis, queues and workers (always 200)",
                "security": [],
                "responses": {"200": _json("Health", "health")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "The farm's metrics for Prometheus",
                "responses": {
                    "200": {
                        "description": "queues, jobs, durations, workers, model loads and "
                        "webhooks (OpenMetrics when the Accept header asks for it)",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    _add_auth_responses(paths)
    return {
        "openapi": "3.1.0",
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
    requires another role than generate, or everywhere else when worker keys exist (they
    may only use /v1/internal/ and read model versions); 503 wherever Redis is needed."""
    roles = _required_roles()
    workers_keyed = bool(state().settings.worker_keys)
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
            elif workers_keyed and not path.startswith(INTERNAL_PREFIX):
                responses["403"] = _err("a worker key (only /v1/internal/ and model reads)")
            responses.setdefault(
                "429", _err("this key's rate limit (by role); see Retry-After", RETRY_AFTER)
            )
            responses.setdefault("503", _err("Redis unreachable", RETRY_AFTER))
            op["responses"] = dict(sorted(responses.items()))


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document."""
    return jsonify(build_document())
