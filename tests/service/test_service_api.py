"""Every endpoint against fakeredis (no worker): validation, errors, auth, idempotency, 429."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from service.schemas import PROMPT_MAX, generation_schema, validate
from service.settings import ServiceSettings
from workers.jobstore.models import REF_PATTERN


def submit(client, body=None, **kw):
    return client.post(
        "/v1/generations", json={"prompt": "a castle at dusk"} if body is None else body, **kw
    )


def test_post_generation_returns_202_with_position_and_links(client):
    first = submit(client)
    second = submit(client, {"prompt": "rain over the hills", "n": 3, "seed": 7})
    assert first.status_code == 202 and second.status_code == 202
    doc = second.get_json()
    assert set(doc) == {"id", "status", "position", "eta_seconds", "links"}
    assert doc["status"] == "queued" and doc["position"] == 1 and doc["eta_seconds"] > 0
    assert doc["links"]["self"] == f"/v1/jobs/{doc['id']}"
    job = client.get(doc["links"]["self"]).get_json()
    assert job["status"] == "queued" and job["position"] == 1 and job["progress"] == 0.0
    assert job["request"]["n"] == 3 and job["request"]["seed"] == 7
    assert job["request"]["model"] == "tiny" and job["request"]["palette"] == "none"


def test_seed_is_fixed_at_submit_when_omitted(client):
    job_id = submit(client).get_json()["id"]
    seed = client.get(f"/v1/jobs/{job_id}").get_json()["request"]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**31


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * (PROMPT_MAX + 1)}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "a", "n": 0}, "n"),
        ({"prompt": "a", "n": 17}, "n"),
        ({"prompt": "a", "n": 2.5}, "n"),
        ({"prompt": "a", "n": True}, "n"),
        ({"prompt": None}, "prompt"),
        ({"prompt": "a", "seed": -1}, "seed"),
        ({"prompt": "a", "seed": 2**31}, "seed"),
        ({"prompt": "a", "temperature": 0}, "temperature"),
        ({"prompt": "a", "temperature": 5.5}, "temperature"),
        ({"prompt": "a", "top_k": 513}, "top_k"),
        ({"prompt": "a", "top_p": 0}, "top_p"),
        ({"prompt": "a", "top_p": 1.5}, "top_p"),
        ({"prompt": "a", "cfg_scale": -1}, "cfg_scale"),
        ({"prompt": "a", "cfg_scale": 21}, "cfg_scale"),
        ({"prompt": "a", "palette": "auto:1"}, "palette"),
        ({"prompt": "a", "palette": "auto:257"}, "palette"),
        ({"prompt": "a", "palette": "/etc/passwd"}, "palette"),
        ({"prompt": "a", "palette": "vga\n"}, "palette"),
        ({"prompt": "a", "scale": 9}, "scale"),
        ({"prompt": "a", "model": "no pe"}, "model"),  # an unknown name is 422 (models tests)
        ({"prompt": "a", "webhook": "ftp://example.com/x"}, "webhook"),
        ({"prompt": "a", "webhook": "not a url"}, "webhook"),
        ({"prompt": "a", "webhook": "http://[::1/x"}, "webhook"),
        ({"prompt": "a", "webhook": "http://[1:2:3]/x"}, "webhook"),  # no IPv6 address
        ({"prompt": "a", "webhook": "http://example.com:65536/x"}, "webhook"),
        ({"prompt": "a", "webhook": "http://user@/x"}, "webhook"),
        ({"prompt": "a", "colour": "red"}, "colour"),
    ],
)
def test_invalid_fields_are_named(client, body, field):
    resp = submit(client, body)
    assert resp.status_code == 400
    err = resp.get_json()["error"]
    assert err["code"] == "invalid_request"
    assert field in err["details"]["fields"]


def test_job_id_with_trailing_newline_is_unknown(client):
    resp = client.get("/v1/jobs/" + "a" * 32 + "%0A")
    assert resp.status_code == 404


def test_every_bad_field_is_reported_at_once(client):
    resp = submit(client, {"prompt": "", "n": 99, "top_p": 2, "extra": 1})
    assert set(resp.get_json()["error"]["details"]["fields"]) == {"prompt", "n", "top_p", "extra"}


def test_valid_edges_are_accepted(client):
    body = {
        "prompt": "x" * PROMPT_MAX,
        "n": 16,
        "seed": 2**31 - 1,
        "temperature": 5,
        "top_k": 512,
        "top_p": 1,
        "cfg_scale": 0,
        "palette": "auto:256",
        "scale": 8,
        "webhook": "https://example.com/hook",
    }
    assert submit(client, body).status_code == 202
    for palette in ("none", "vga", "auto:2"):
        assert submit(client, {"prompt": "a", "palette": palette}).status_code == 202


def test_null_is_a_left_out_field_and_2_0_is_an_integer(client, fake_redis):
    """As the OpenAPI document says: optional fields are nullable, and JSON Schema's
    integers include 2.0."""
    body = {"prompt": "a", "n": 2.0, "seed": None, "webhook": None, "model": None}
    resp = submit(client, body)
    assert resp.status_code == 202, resp.get_json()
    job = client.get(f"/v1/jobs/{resp.get_json()['id']}").get_json()
    assert job["request"]["n"] == 2 and isinstance(job["request"]["seed"], int)
    assert job["request"]["model"] == "tiny" and "webhook" not in job["request"]
    assert job["webhook"] is None


def test_named_palettes_come_from_settings(make_app):
    client = make_app(palettes={"c64": "/srv/palettes/c64.gpl"}).test_client()
    assert submit(client, {"prompt": "a", "palette": "c64"}).status_code == 202
    assert submit(client, {"prompt": "a", "palette": "nes"}).status_code == 400


def test_not_json_is_415_and_broken_json_is_400(client):
    resp = client.post("/v1/generations", data="prompt=a", content_type="text/plain")
    assert resp.status_code == 415
    assert resp.get_json()["error"]["code"] == "unsupported_media_type"
    resp = client.post("/v1/generations", data="{oops", content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_json"
    resp = client.post("/v1/generations", json=["a list"])
    assert resp.status_code == 400


def test_deeply_nested_json_is_400_not_a_logged_500(client, caplog):
    for depth in (1000, 30_000):  # 60 KB: under the 64 KB body limit
        resp = client.post(
            "/v1/generations", data="[" * depth + "]" * depth, content_type="application/json"
        )
        assert resp.status_code == 400, depth
        assert resp.get_json()["error"]["code"] == "invalid_json"
    assert "unhandled error" not in caplog.text and "Traceback" not in caplog.text


def test_lone_surrogate_is_refused_at_submit(client, fake_redis):
    # JSON may escape a lone surrogate; no UTF-8 text (the model's, a file's) can hold it.
    body = '{"prompt": "castle \\ud800 dusk", "webhook": "http://example.com/\\udfff"}'
    resp = client.post("/v1/generations", data=body, content_type="application/json")
    assert resp.status_code == 400
    fields = resp.get_json()["error"]["details"]["fields"]
    assert set(fields) == {"prompt", "webhook"} and "Unicode" in fields["prompt"]
    assert fake_redis.llen("rq:queue:generate") == 0
    ok = '{"prompt": "castle \\ud83c\\udff0 dusk"}'  # a surrogate pair is one character
    assert (
        client.post("/v1/generations", data=ok, content_type="application/json").status_code == 202
    )


def test_body_too_large_is_413(make_app):
    client = make_app(max_content_length=1024).test_client()
    resp = client.post("/v1/generations", json={"prompt": "x" * 4000})
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "payload_too_large"


def test_unknown_route_404_and_wrong_method_405(client):
    resp = client.get("/v1/nothing")
    assert resp.status_code == 404 and "error" in resp.get_json()
    resp = client.put("/v1/generations", json={})
    assert resp.status_code == 405
    assert resp.get_json()["error"]["code"] == "method_not_allowed"


def test_unknown_or_malformed_job_id_is_404(client):
    for job_id in (uuid.uuid4().hex, "..%2f..%2fetc", "ABC", "0" * 33):
        resp = client.get(f"/v1/jobs/{job_id}")
        assert resp.status_code == 404
        assert resp.get_json()["error"]["code"] in ("job_not_found", "not_found")
    assert client.get(f"/v1/jobs/{uuid.uuid4().hex}/images/0.png").status_code == 404


def test_queue_limit_gives_429_with_retry_after(make_app):
    client = make_app(max_queue=2).test_client()
    assert submit(client).status_code == 202
    assert submit(client).status_code == 202
    resp = submit(client)
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.get_json()["error"]["code"] == "queue_full"


def test_idempotency_key_same_body_same_job(client, fake_redis):
    headers = {"Idempotency-Key": "order-42"}
    a = submit(client, {"prompt": "a lighthouse"}, headers=headers)
    b = submit(client, {"prompt": "a lighthouse"}, headers=headers)
    assert a.status_code == b.status_code == 202
    assert a.get_json()["id"] == b.get_json()["id"]
    assert b.headers["Idempotent-Replayed"] == "true"
    assert fake_redis.llen("rq:queue:generate") == 1
    ttl = fake_redis.ttl(next(iter(fake_redis.scan_iter("pixelscene:idem:*"))))
    assert 86000 < ttl <= 86400
    other = submit(client, {"prompt": "a lighthouse"}, headers={"Idempotency-Key": "order-43"})
    assert other.get_json()["id"] != a.get_json()["id"]


def test_idempotency_key_different_body_is_422(client):
    headers = {"Idempotency-Key": "k1"}
    assert submit(client, {"prompt": "a"}, headers=headers).status_code == 202
    resp = submit(client, {"prompt": "b"}, headers=headers)
    assert resp.status_code == 422
    assert resp.get_json()["error"]["code"] == "idempotency_key_reused"


def test_api_keys_are_required_when_configured(make_app):
    client = make_app(api_keys=["k-one", "k-two"]).test_client()
    assert submit(client).status_code == 401
    resp = submit(client, headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    assert submit(client, headers={"Authorization": "Bearer k-two"}).status_code == 202
    assert client.get("/v1/health").status_code == 200  # open for load balancers
    assert client.get("/openapi.json").status_code == 200


def test_idempotency_scope_is_the_key_not_the_header_spelling(make_app, fake_redis):
    client = make_app(api_keys=["k-one", "k-two"]).test_client()
    spellings = ("Bearer k-one", "bearer k-one", "BEARER  k-one ")
    ids = set()
    for auth in spellings:
        resp = submit(client, headers={"Authorization": auth, "Idempotency-Key": "order-7"})
        assert resp.status_code == 202, (auth, resp.get_json())
        ids.add(resp.get_json()["id"])
    assert len(ids) == 1 and fake_redis.llen("rq:queue:generate") == 1
    other = submit(client, headers={"Authorization": "Bearer k-two", "Idempotency-Key": "order-7"})
    assert other.status_code == 202 and other.get_json()["id"] not in ids


def test_without_keys_only_localhost_is_served(client):
    resp = client.get("/v1/jobs", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert resp.status_code == 401
    assert client.get("/v1/jobs", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_list_jobs_paginates_and_filters(client):
    ids = [submit(client, {"prompt": f"p{i}"}).get_json()["id"] for i in range(5)]
    client.delete(f"/v1/jobs/{ids[0]}")
    page = client.get("/v1/jobs?limit=2").get_json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]
    seen = [j["id"] for j in page["jobs"]]
    while page["next_cursor"]:
        page = client.get(f"/v1/jobs?limit=2&cursor={page['next_cursor']}").get_json()
        seen += [j["id"] for j in page["jobs"]]
    assert seen == ids[::-1]
    canceled = client.get("/v1/jobs?status=canceled").get_json()["jobs"]
    assert [j["id"] for j in canceled] == [ids[0]]
    bad = client.get("/v1/jobs?status=done&limit=0")
    assert bad.status_code == 400
    assert set(bad.get_json()["error"]["details"]["fields"]) == {"status", "limit"}


def test_cancel_queued_job(client, fake_redis):
    job_id = submit(client).get_json()["id"]
    resp = client.delete(f"/v1/jobs/{job_id}")
    assert resp.status_code == 200 and resp.get_json()["status"] == "canceled"
    assert fake_redis.llen("rq:queue:generate") == 0
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200  # idempotent
    assert client.delete(f"/v1/jobs/{uuid.uuid4().hex}").status_code == 404


def test_models_lists_configured_models(make_app, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"name": "tiny"}))
    client = make_app(models={"tiny": "", "mine": str(tmp_path / "missing")}).test_client()
    models = {m["name"]: m for m in client.get("/v1/models").get_json()["models"]}
    assert set(models) == {"tiny", "mine"}
    assert models["tiny"]["default"] is True
    assert models["mine"]["available"] is False


def test_health_reports_queues(client):
    submit(client)
    doc = client.get("/v1/health").get_json()
    assert doc["redis"]["reachable"] is True
    assert doc["queues"]["generate"] == {"queued": 1, "running": 0}
    assert doc["workers"] == [] and doc["worker_count"] == 0 and doc["status"] == "degraded"


def test_health_shows_worker_details_only_to_admin_keys(make_app, fake_redis):
    from rq import Worker

    from workers.jobstore.queues import get_queue

    worker = Worker([get_queue("generate", fake_redis)], connection=fake_redis, name="host-a.42")
    worker.register_birth()
    client = make_app(api_keys=["k-one"], admin_keys=["k-ops"]).test_client()
    for headers in ({}, {"Authorization": "Bearer k-one"}):
        public = client.get("/v1/health", headers=headers).get_json()
        assert public["worker_count"] == 1 and public["status"] == "ok"
        assert "workers" not in public and "host-a" not in json.dumps(public)
    private = client.get("/v1/health", headers={"Authorization": "Bearer k-ops"}).get_json()
    assert [w["name"] for w in private["workers"]] == ["host-a.42"]


def test_redis_down_gives_503_but_health_200(overrides):
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from service import create_app

    dead = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    client = create_app({"REDIS": dead, **overrides}).test_client()
    resp = submit(client)
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "redis_unavailable"
    assert "Traceback" not in resp.get_data(as_text=True)
    health = client.get("/v1/health")
    assert health.status_code == 200 and health.get_json()["redis"]["reachable"] is False


def test_unexpected_errors_are_json_without_trace(app, client, monkeypatch):
    import service.api.generations as gen

    def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(gen, "enqueue_job", boom)
    resp = submit(client)
    assert resp.status_code == 500
    body = resp.get_data(as_text=True)
    assert "secret internals" not in body and "Traceback" not in body
    assert resp.get_json()["error"]["code"] == "internal_error"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/x",
        "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one number
        "http://0xa9.0xfe.0xa9.0xfe/x",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[64:ff9b::a9fe:a9fe]/x",  # NAT64
        "http://[::169.254.169.254]/x",  # IPv4-compatible
        "http://[2002:a9fe:a9fe::1]/x",  # 6to4
        "http://[64:ff9b::808:808]/x",  # NAT64 of a public address: still a tunnel
        "http://10.0.0.7:9000/hook",
        "http://127.0.0.1:8000/v1/generations",  # the API itself
        "http://[::1]:8000/x",
        "http://[::ffff:127.0.0.1]:8000/x",
    ],
)
def test_webhook_to_a_refused_address_is_a_400(make_app, url):
    client = make_app().test_client()  # no private networks allowed: the default
    resp = submit(client, {"prompt": "a", "webhook": url})
    assert resp.status_code == 400, url
    assert "refused" in resp.get_json()["error"]["details"]["fields"]["webhook"]


def test_webhooks_to_listed_private_networks_are_accepted(make_app):
    client = make_app(webhook_private_networks="10.0.0.0/8, ::1/128").test_client()
    for url in ("http://10.0.0.7:9000/hook", "http://[::1]:8000/x", "https://hooks.example.com/x"):
        assert submit(client, {"prompt": "a", "webhook": url}).status_code == 202, url
    for url in ("http://127.0.0.1:8000/x", "http://192.168.1.2/x"):
        assert submit(client, {"prompt": "a", "webhook": url}).status_code == 400, url


def test_webhook_needs_a_secret(make_app):
    client = make_app(webhook_secret="").test_client()
    resp = submit(client, {"prompt": "a", "webhook": "http://127.0.0.1:9/x"})
    assert resp.status_code == 400 and "webhook" in resp.get_json()["error"]["details"]["fields"]


def test_openapi_uses_the_validation_schemas(app, client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/generations", "/v1/jobs/{job_id}", "/v1/jobs", "/v1/models", "/v1/health"):
        assert path in doc["paths"]
    schema = doc["components"]["schemas"]["GenerationRequest"]
    assert schema == app.extensions["pixelscene"].schemas["GenerationRequest"]
    assert schema["properties"]["n"]["maximum"] == 16
    # A name or name@version, as trained versions come and go; null: the default
    assert schema["properties"]["model"]["pattern"] == REF_PATTERN
    assert schema["properties"]["model"]["default"] == "tiny"
    # Every view is documented; the artists' page (service.page) is HTML, not API.
    rules = {
        r.rule
        for r in app.url_map.iter_rules()
        if r.endpoint != "static" and not r.endpoint.startswith("page.")
    }
    documented = {p.replace("{", "<").replace("}", ">") for p in doc["paths"]} | {"/openapi.json"}
    normalized = {r.replace("<int:index>", "<index>") for r in rules}
    assert normalized <= documented


def test_schema_validate_fills_defaults():
    schema = generation_schema(ServiceSettings.load(environ={}))
    assert validate(schema, {"prompt": "a"}) == {
        "prompt": "a",
        "n": 1,
        "palette": "none",
        "scale": 1,
        "model": "tiny",
    }


def test_post_training_validates_and_queues(client, fake_redis):
    resp = client.post("/v1/trainings", json={"stage": "vqgan", "dataset": "synth-1k"})
    assert resp.status_code == 202
    assert fake_redis.llen("rq:queue:train") == 1
    bad = client.post("/v1/trainings", json={"stage": "gan", "dataset": "../etc"})
    assert set(bad.get_json()["error"]["details"]["fields"]) == {"stage", "dataset"}
    for minutes in (0, -5, "10"):
        bad = client.post(
            "/v1/trainings", json={"stage": "vqgan", "dataset": "d", "max_minutes": minutes}
        )
        assert (
            bad.status_code == 400 and "max_minutes" in bad.get_json()["error"]["details"]["fields"]
        )
    for stage in ("transformer", "decoder"):
        bad = client.post("/v1/trainings", json={"stage": stage, "dataset": "d"})
        assert bad.status_code == 400
        assert (
            bad.get_json()["error"]["details"]["fields"]["base_model"]
            == f"is required for stage {stage} (or its older form, vqgan)"
        )
    model = sorted(client.application.extensions["pixelscene"].settings.models)[0]
    bad = client.post(
        "/v1/trainings",
        json={"stage": "decoder", "dataset": "d", "vqgan": model, "init_from": model},
    )
    assert bad.get_json()["error"]["details"]["fields"] == {
        "init_from": "is only for stage transformer"
    }
    ok = client.post(
        "/v1/trainings",
        json={"stage": "transformer", "dataset": "d", "vqgan": model, "init_from": model,
              "config": "tiny-sprites"},
    )  # fmt: skip
    assert ok.status_code == 202


def test_a_running_training_is_asked_to_stop_at_its_next_step(client, fake_redis):
    job_id = client.post("/v1/trainings", json={"stage": "vqgan", "dataset": "d"}).get_json()["id"]
    fake_redis.hset(f"pixelscene:job:{job_id}", "status", "running")
    resp = client.delete(f"/v1/jobs/{job_id}")
    assert resp.status_code == 202
    assert resp.get_json()["status"] == "running" and resp.get_json()["cancel_requested"]
    assert fake_redis.hget(f"pixelscene:job:{job_id}", "cancel") == b"1"


def test_a_training_request_becomes_typed_stage_requests(tmp_path):
    """Each stage, old names and fields included, as the typed requests `pixelscene train
    <stage>` builds (tests/test_stages.py pins the CLI's side), run in the job's folder."""
    from pixelscene.testing import make_random_model_dir
    from pixelscene.train.stages import (
        DecoderRequest,
        TokenizerRequest,
        TransformerRequest,
        VqganRequest,
    )
    from workers.training import plan

    run, d, e = tmp_path / "run", tmp_path / "d", tmp_path / "e"
    base = make_random_model_dir(tmp_path / "base")  # a VQGAN and a transformer
    tok, model = run / "tokenizer", run / "model"

    def phases(request, base=None, init=None):
        return [(p.name, p.request) for p in plan(request, run, d, e, base, init).phases]

    new = {"stage": "tokenizer", "dataset": "x", "name": "m", "steps": 5}
    assert phases(new) == [
        ("tokenizer", VqganRequest(data_dir=d, out_dir=tok, eval_dir=e, config="tiny", steps=5))
    ]
    assert phases({**new, "preset": "pixel"})[0][1] == TokenizerRequest(
        data_dirs=[d], out_dir=tok, eval_dir=e, config="pixel", steps=5
    )
    # with a base model: its decoder fine-tuned (its codes, so its transformer, stay valid)
    assert phases(new, base) == [
        ("tokenizer", DecoderRequest(data_dir=d, model_dir=base, out_dir=tok, eval_dir=e, steps=5))
    ]
    # all: the tokenizer, then a transformer on it; each keeps to half the time budget
    both = phases({"stage": "all", "dataset": "x", "name": "m", "max_minutes": 10})
    assert [name for name, _ in both] == ["tokenizer", "transformer"]
    assert both[0][1].max_minutes == 5 and both[1][1] == TransformerRequest(
        data_dir=d, vqgan_dir=tok, out_dir=model, eval_dir=e, config="tiny", max_minutes=5
    )
    # transformer on a base: its own transformer fine-tuned, or a preset's trained anew
    tune = {"stage": "transformer", "dataset": "x", "base_model": "b", "name": "m"}
    assert phases(tune, base)[0][1] == TransformerRequest(
        data_dir=d, vqgan_dir=base, out_dir=model, eval_dir=e, config=base, init_from=base
    )
    assert phases({**tune, "preset": "tiny-learned"}, base)[0][1] == TransformerRequest(
        data_dir=d, vqgan_dir=base, out_dir=model, eval_dir=e, config="tiny-learned"
    )
    # the older stages and fields keep their meaning
    old = {"stage": "transformer", "dataset": "x", "vqgan": "tiny", "config": "tiny-sprites"}
    assert phases(old, base, init=tmp_path / "i")[0][1] == TransformerRequest(
        data_dir=d, vqgan_dir=base, out_dir=model, eval_dir=e, config="tiny-sprites",
        init_from=tmp_path / "i",
    )  # fmt: skip
    assert phases({"stage": "transformer", "dataset": "x", "vqgan": "tiny"}, base)[0][1] == (
        TransformerRequest(data_dir=d, vqgan_dir=base, out_dir=model, eval_dir=e, config="tiny")
    )
    decoder = {"stage": "decoder", "dataset": "x", "vqgan": "tiny", "max_minutes": 1.5}
    assert phases(decoder, base)[0][1] == DecoderRequest(
        data_dir=d, model_dir=base, out_dir=tok, eval_dir=e, max_minutes=1.5
    )
    assert phases({"stage": "vqgan", "dataset": "x"})[0][1] == VqganRequest(
        data_dir=d, out_dir=tok, eval_dir=e, config="tiny"
    )
