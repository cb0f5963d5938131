"""/openapi.json is valid OpenAPI 3.1, and true: schemathesis drives every operation with
requests generated from it (valid and invalid ones) and checks each answer against it."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate as validate_spec
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ADMIN = "admin-key"
# Every operation of the document, so that a new one cannot go untested.
OPERATIONS = [
    "POST /v1/generations",
    "POST /v1/trainings",
    "GET /v1/jobs",
    "GET /v1/jobs/{job_id}",
    "DELETE /v1/jobs/{job_id}",
    "GET /v1/jobs/{job_id}/images/{index}.png",
    "GET /v1/jobs/{job_id}/codes/{index}.json",
    "PUT /v1/internal/jobs/{job_id}/objects/{name}",
    "POST /v1/datasets",
    "GET /v1/datasets",
    "GET /v1/datasets/{dataset_id}",
    "DELETE /v1/datasets/{dataset_id}",
    "GET /v1/internal/datasets/{dataset_id}/archive",
    "GET /v1/models",
    "GET /v1/models/{name}/{version}",
    "DELETE /v1/models/{name}/{version}",
    "GET /v1/models/{name}/{version}/files/{filename}",
    "GET /v1/jobs/{job_id}/sample.png",
    "PUT /v1/internal/jobs/{job_id}/model/{name}",
    "POST /v1/internal/jobs/{job_id}/model",
    "GET /v1/health",
    "GET /metrics",
]  # and GET /openapi.json, which schemathesis leaves out as the document it reads
# About 450 requests in all, in a few seconds.
# Requests per operation and mode, the same ones in every run; PIXELSCENE_FUZZ_EXAMPLES=500
# makes a longer, random run (the regressions below pin what such runs found).
EXAMPLES = int(os.environ.get("PIXELSCENE_FUZZ_EXAMPLES", "0")) or 25
RANDOM = "PIXELSCENE_FUZZ_EXAMPLES" in os.environ
# What a response to a request made by hand can be checked for.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api(make_app):
    """An app with keys (so schemathesis also checks that a request without one gets 401),
    called with an admin key, which may use every operation."""
    return make_app(admin_keys=[ADMIN], api_keys=["generate-key"], palettes={"c64": "c64.gpl"})


@pytest.fixture
def schema(api):
    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"bearer": {"bearer": ADMIN}}},
            # 422 is the answer to an Idempotency-Key reused with another body: a valid
            # request that meets an earlier one, as 409 is.
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]
                }
            },
            # Any bytes fit a binary body's schema, yet only an archive is a dataset: a
            # schema-valid upload may be refused (400 invalid_archive).
            "operations": [
                {
                    "include-path": "/v1/datasets",
                    "include-method": "POST",
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                }
            ],
        }
    )
    return schemathesis.openapi.from_wsgi("/openapi.json", api, config=config)


@pytest.mark.parametrize(
    "keys", [{}, {"admin_keys": [ADMIN]}, {"admin_keys": [ADMIN], "worker_keys": ["w"]}]
)
def test_the_document_is_valid_openapi_3_1(make_app, keys):
    doc = make_app(**keys, palettes={"c64": "c64.gpl"}).test_client().get("/openapi.json")
    doc = doc.get_json()
    assert doc["openapi"].startswith("3.1.")
    validate_spec(doc)  # raises on an invalid document


def test_every_operation_is_tested(schema):
    assert sorted(op.ok().label for op in schema.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_the_server_keeps_the_document(schema, label):
    """No 5xx; status codes, content types, headers and bodies as documented; valid
    requests accepted and invalid ones refused."""
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    has_inputs = "parameters" in operation.definition.raw or operation.body
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if has_inputs else [])
    for mode in modes:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=not RANDOM,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate()

        run()


def test_real_jobs_match_the_document(api, schema, run_worker, fake_model):
    """Generated job ids name no job; these requests reach jobs in every final status."""
    client = api.test_client()
    auth = {"Authorization": f"Bearer {ADMIN}"}

    def post(path, body):
        resp = client.post(path, json=body, headers=auth)
        assert resp.status_code == 202, resp.get_json()
        return resp.get_json()["id"]

    done = post("/v1/generations", {"prompt": "a mill", "n": 2, "webhook": None})
    canceled = post("/v1/generations", {"prompt": "a moor"})
    client.delete(f"/v1/jobs/{canceled}", headers=auth)
    run_worker(queues=("generate",))
    fake_model.iter_generate = None  # the next job fails
    failed = post("/v1/generations", {"prompt": "a marsh", "webhook": "https://example.com/h"})
    run_worker(queues=("generate",))
    queued = post("/v1/trainings", {"stage": "transformer", "dataset": "d", "vqgan": "tiny"})
    statuses = {j: client.get(f"/v1/jobs/{j}", headers=auth).get_json()["status"] for j in
                (done, canceled, failed, queued)}  # fmt: skip
    assert sorted(statuses.values()) == ["canceled", "failed", "queued", "succeeded"]

    cases = [("GET", "/v1/jobs", {}, {"limit": 2})]
    for job_id in statuses:
        cases += [
            ("GET", "/v1/jobs/{job_id}", {"job_id": job_id}, {}),
            ("GET", "/v1/jobs/{job_id}/images/{index}.png", {"job_id": job_id, "index": 1}, {}),
            ("GET", "/v1/jobs/{job_id}/codes/{index}.json", {"job_id": job_id, "index": 0}, {}),
        ]
    for job_id in (done, queued):  # 409, then 200
        cases.append(("DELETE", "/v1/jobs/{job_id}", {"job_id": job_id}, {}))
    page = client.get("/v1/jobs?limit=2", headers=auth).get_json()
    cases.append(("GET", "/v1/jobs", {}, {"cursor": page["next_cursor"]}))
    seen = set()
    for method, path, params, query in cases:
        case = schema[path][method].Case(path_parameters=params, query=query)
        # The test client, not case.call(), which leaves a served file open.
        with client.open(case.formatted_path, method=method, query_string=query, headers=auth) as r:
            case.validate_response(r, checks=CONFORMANCE)
            seen.add((method, path, r.status_code))
    assert {
        ("GET", "/v1/jobs", 200),
        ("GET", "/v1/jobs/{job_id}/images/{index}.png", 200),
        ("GET", "/v1/jobs/{job_id}/codes/{index}.json", 200),
        ("DELETE", "/v1/jobs/{job_id}", 409),
        ("DELETE", "/v1/jobs/{job_id}", 200),
    } <= seen


def test_real_datasets_match_the_document(api, schema):
    """Generated bodies are no archives and generated ids name no dataset; these requests
    store one, list it, refuse and then allow its deletion, and fetch it as a worker."""
    from test_service_datasets import good_files, zip_of

    from workers.jobstore.queues import TRAIN, enqueue_job

    client = api.test_client()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    body = zip_of({**good_files(2), "notes.txt": b"x"})
    with client.post(
        "/v1/datasets", data=body, headers={**auth, "Content-Type": "application/zip"}
    ) as r:
        schema["/v1/datasets"]["POST"].Case(media_type="application/zip").validate_response(
            r, checks=CONFORMANCE
        )
        assert r.status_code == 201, r.get_json()
        dataset = r.get_json()["id"]
    st = api.extensions["pixelscene"]
    enqueue_job(st.redis, st.settings, TRAIN, "e" * 32, {"stage": "vqgan", "dataset": dataset})
    cases = [
        ("GET", "/v1/datasets", {}, 200),
        ("GET", "/v1/datasets/{dataset_id}", {"dataset_id": dataset}, 200),
        ("GET", "/v1/internal/datasets/{dataset_id}/archive", {"dataset_id": dataset}, 200),
        ("DELETE", "/v1/datasets/{dataset_id}", {"dataset_id": dataset}, 409),
    ]
    for method, path, params, status in cases:
        case = schema[path][method].Case(path_parameters=params)
        with client.open(case.formatted_path, method=method, headers=auth) as r:
            case.validate_response(r, checks=CONFORMANCE)
            assert r.status_code == status, (method, path, r.get_json())
    client.delete(f"/v1/jobs/{'e' * 32}", headers=auth)
    case = schema["/v1/datasets/{dataset_id}"]["DELETE"].Case(
        path_parameters={"dataset_id": dataset}
    )
    with client.open(case.formatted_path, method="DELETE", headers=auth) as r:
        case.validate_response(r, checks=CONFORMANCE)
        assert r.status_code == 204


BLANK = ["\x1d", "\ufeff", " \u3000", "\x85"]  # white space to Python or to ECMA regexes
GENERATIONS = [
    {"prompt": "a", "n": 2.0},  # an integer in JSON Schema
    {"prompt": "a", "n": 2.5},
    {"prompt": "a", "seed": None, "webhook": None, "palette": None, "model": None},
    {"prompt": None},
    *({"prompt": p} for p in BLANK),
    {"prompt": "a\x1d"},
    {"prompt": "a", "webhook": "HTTPS://hooks.example.com:8443/a?b#c"},
    {"prompt": "a", "webhook": "https://u:p@hooks.example.com/"},
    {"prompt": "a", "webhook": "http://[1:2:3]/"},  # the pattern lets it by, no address
    {"prompt": "a", "webhook": "http://example.com:65536/"},
    {"prompt": "a", "webhook": "https://example.com/a b"},
    {"prompt": "a", "webhook": "ftp://example.com/"},
]
TRAININGS = [
    {"stage": "transformer", "dataset": "d"},
    {"stage": "transformer", "dataset": "d", "vqgan": None},
    {"stage": "transformer", "dataset": "d", "vqgan": "tiny"},
    {"stage": "decoder", "dataset": "d", "vqgan": "tiny", "init_from": "tiny"},
    {"stage": "transformer", "dataset": "d", "vqgan": "tiny", "init_from": "tiny"},
    {"stage": "vqgan", "dataset": "d", "init_from": None, "steps": 10.0},
    {"stage": "vqgan", "dataset": "d", "init_from": "tiny"},
    {"stage": "vqgan", "dataset": "d", "max_minutes": 0},
]


@pytest.mark.parametrize(
    ("path", "name", "body"),
    [("/v1/generations", "GenerationRequest", b) for b in GENERATIONS]
    + [("/v1/trainings", "TrainingRequest", b) for b in TRAININGS],
)
def test_the_document_and_the_server_agree_on_bodies(api, path, name, body):
    """Where the fuzzing once found them apart, and the rules between fields."""
    from jsonschema import Draft202012Validator

    client = api.test_client()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    schema = client.get("/openapi.json").get_json()["components"]["schemas"][name]
    documented = Draft202012Validator(schema).is_valid(body)
    status = client.post(path, json=body, headers=auth).status_code
    assert status == (202 if documented else 400), (body, documented)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 200),
        ("limit=5&status=queued", 200),
        ("cursor=", 400),  # as its pattern says: empty is no cursor
        ("limit=", 400),
        ("status=", 400),
        ("limit=%205", 400),  # int() would take these
        ("limit=1_0", 400),
        ("limit=%D9%A3", 400),
        (f"cursor={'9' * 21}-{'a' * 32}", 400),
        ("statuss=failed", 400),  # a typo is not silently ignored
    ],
)
def test_job_list_queries_are_checked_as_documented(api, query, status):
    resp = api.test_client().get(f"/v1/jobs?{query}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status_code == status, resp.get_json()


@pytest.mark.parametrize(
    ("key", "status"), [("order-1", 202), ("~ ok ~", 202), ("", 400), ("caf\u00e9", 400),
                        ("k" * 256, 400)]
)  # fmt: skip
def test_idempotency_keys_are_checked_as_documented(api, key, status):
    headers = {"Authorization": f"Bearer {ADMIN}", "Idempotency-Key": key}
    resp = api.test_client().post("/v1/generations", json={"prompt": "a"}, headers=headers)
    assert resp.status_code == status, resp.get_json()
