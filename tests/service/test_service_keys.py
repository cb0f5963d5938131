"""API keys: each key sees only its own jobs, roles gate admin work, token buckets per key."""

from __future__ import annotations

import hashlib
import json
import logging
import threading

import pytest
from service_fakes import wait_for

from service.ratelimit import Limit, parse_limit, take
from service.settings import ServiceSettings
from workers.jobstore.records import Keys
from workers.settings import SettingsError

KEYS = {"api_keys": ["key-a", "key-b"], "admin_keys": ["key-admin"]}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
ADMIN = {"Authorization": "Bearer key-admin"}
TRAINING = {"stage": "vqgan", "dataset": "synth-1k"}


def submit(client, headers, **body):
    resp = client.post("/v1/generations", json={"prompt": "a castle", **body}, headers=headers)
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]


@pytest.fixture
def keyed(make_app):
    return make_app(**KEYS).test_client()


def test_another_keys_job_is_404_everywhere(keyed, run_worker):
    done = submit(keyed, A)
    run_worker()
    queued = submit(keyed, A, webhook="https://hooks.example.com/x?token=s3cret")
    paths = [
        f"/v1/jobs/{queued}",
        f"/v1/jobs/{done}",
        f"/v1/jobs/{done}/images/0.png",
        f"/v1/jobs/{done}/codes/0.json",
    ]
    for path in paths:
        for allowed in (A, ADMIN):
            with keyed.get(path, headers=allowed) as resp:  # closes a sent file
                assert resp.status_code == 200, path
        other = keyed.get(path, headers=B)
        assert other.status_code == 404, path
        assert other.get_json()["error"]["code"] == "job_not_found"
        assert "s3cret" not in other.get_data(as_text=True)
    # 404, not 403: B cannot tell A's job from a job that never was
    missing = keyed.get(f"/v1/jobs/{'0' * 32}", headers=B).get_json()
    assert (
        keyed.get(f"/v1/jobs/{queued}", headers=B).get_json()["error"]["code"]
        == (missing["error"]["code"])
    )
    assert keyed.delete(f"/v1/jobs/{queued}", headers=B).status_code == 404
    assert keyed.get(f"/v1/jobs/{queued}", headers=A).get_json()["status"] == "queued"
    assert keyed.delete(f"/v1/jobs/{queued}", headers=A).status_code == 200


def test_lists_show_a_keys_own_jobs_and_admins_all(keyed):
    mine = [submit(keyed, A, prompt=f"a{i}") for i in range(3)]
    theirs = submit(keyed, B)
    admins = submit(keyed, ADMIN)

    def listed(headers, query=""):
        page = keyed.get(f"/v1/jobs?limit=2{query}", headers=headers).get_json()
        ids = [j["id"] for j in page["jobs"]]
        while page["next_cursor"]:
            page = keyed.get(f"/v1/jobs?limit=2&cursor={page['next_cursor']}", headers=headers)
            page = page.get_json()
            ids += [j["id"] for j in page["jobs"]]
        return ids

    assert listed(A) == mine[::-1]
    assert listed(B) == [theirs]
    assert listed(ADMIN) == [admins, theirs, *mine[::-1]]
    assert listed(B, "&status=queued") == [theirs]


def test_job_records_name_the_owner_by_hash_never_by_key(keyed, fake_redis):
    job_id = submit(keyed, A)
    raw = {k.decode(): v.decode() for k, v in fake_redis.hgetall(Keys().job(job_id)).items()}
    assert raw["owner"] == hashlib.sha256(b"key-a").hexdigest()[:16]
    dump = json.dumps(raw) + str(fake_redis.keys("*"))
    assert "key-a" not in dump
    assert "owner" not in keyed.get(f"/v1/jobs/{job_id}", headers=A).get_json()


def test_only_admin_keys_may_train_or_see_workers(keyed, fake_redis):
    from rq import Worker

    from workers.jobstore.queues import get_queue

    Worker(
        [get_queue("generate", fake_redis)], connection=fake_redis, name="host-a.7"
    ).register_birth()
    denied = keyed.post("/v1/trainings", json=TRAINING, headers=A)
    assert denied.status_code == 403
    error = denied.get_json()["error"]
    assert error["code"] == "forbidden" and "admin" in error["message"]
    assert error["details"] == {"required_role": "admin"}
    assert fake_redis.llen("rq:queue:train") == 0
    assert keyed.post("/v1/trainings", json=TRAINING, headers=ADMIN).status_code == 202
    assert "workers" not in keyed.get("/v1/health", headers=A).get_json()
    workers = keyed.get("/v1/health", headers=ADMIN).get_json()["workers"]
    assert [w["name"] for w in workers] == ["host-a.7"]
    # a generate key still generates, reads and cancels its own jobs
    job_id = submit(keyed, A)
    assert keyed.delete(f"/v1/jobs/{job_id}", headers=A).status_code == 200


def test_without_keys_localhost_may_do_everything(client):
    assert client.post("/v1/trainings", json=TRAINING).status_code == 202
    assert "workers" in client.get("/v1/health").get_json()


def test_settings_hold_key_hashes_and_accept_them(make_app):
    digest = hashlib.sha256(b"ops-key").hexdigest()
    settings = ServiceSettings.load(
        environ={
            "PIXELSCENE_API_KEYS": "key-a",
            "PIXELSCENE_ADMIN_KEYS": f"sha256:{digest.upper()}",
        }
    )
    assert settings.admin_keys == [f"sha256:{digest}"]
    assert settings.api_keys == ["sha256:" + hashlib.sha256(b"key-a").hexdigest()]
    assert "key-a" not in repr(settings) and "key-a" not in str(vars(settings))
    client = make_app(admin_keys=[f"sha256:{digest}"]).test_client()
    headers = {"Authorization": "Bearer ops-key"}
    assert client.post("/v1/trainings", json=TRAINING, headers=headers).status_code == 202
    wrong = {"Authorization": f"Bearer sha256:{digest}"}  # the hash is not a key
    assert client.get("/v1/jobs", headers=wrong).status_code == 401
    with pytest.raises(SettingsError, match="PIXELSCENE_ADMIN_KEYS: entry 2") as e:
        ServiceSettings.load(environ={"PIXELSCENE_ADMIN_KEYS": "fine,sha256:abc"})
    assert "fine" not in str(e.value)


def test_keys_are_never_logged(make_app, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_app(**KEYS, rate_limit_generate="1/min burst 1").test_client()
    submit(client, A)
    client.get("/v1/jobs", headers=A)  # rate limited
    client.get("/v1/jobs", headers={"Authorization": "Bearer key-wrong"})
    client.post("/v1/trainings", json=TRAINING, headers=B)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(k in text for k in ("key-a", "key-b", "key-admin", "key-wrong"))


def test_rate_limit_is_per_key_with_retry_after(make_app):
    client = make_app(**KEYS, rate_limit_generate="1/min burst 2").test_client()
    assert [client.get("/v1/jobs", headers=A).status_code for _ in range(2)] == [200, 200]
    limited = client.get("/v1/jobs", headers=A)
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert client.post("/v1/generations", json={"prompt": "x"}, headers=A).status_code == 429
    assert client.get("/v1/jobs", headers=B).status_code == 200  # B has its own bucket
    assert all(client.get("/v1/jobs", headers=ADMIN).status_code == 200 for _ in range(5))
    assert client.get("/v1/health").status_code == 200  # public paths take no token


def test_rate_limit_refills(make_app):
    # 2/s: the bucket refills after 0.5 s, so the second request (made at once) finds it
    # empty even on a busy machine (at 20/s a 50 ms pause between them refilled it)
    client = make_app(**KEYS, rate_limit_generate="2/s burst 1").test_client()
    assert client.get("/v1/jobs", headers=A).status_code == 200
    limited = client.get("/v1/jobs", headers=A)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    wait_for(lambda: client.get("/v1/jobs", headers=A).status_code == 200, timeout=5)


def test_rate_limit_per_role_and_none_on_localhost(make_app):
    client = make_app(**KEYS, rate_limit_admin="1/h burst 1").test_client()
    assert client.get("/v1/jobs", headers=ADMIN).status_code == 200
    assert client.get("/v1/jobs", headers=ADMIN).status_code == 429
    local = make_app(rate_limit_generate="1/h burst 1", rate_limit_admin="1/h burst 1")
    local = local.test_client()
    assert all(local.get("/v1/jobs").status_code == 200 for _ in range(5))


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("10/s burst 20", Limit(10.0, 20)),
        ("600/min", Limit(10.0, 10)),
        ("1/h", Limit(1 / 3600, 1)),
        ("10 20", Limit(10.0, 20)),
        ("off", None),
        ("", None),
    ],
)
def test_rate_limit_settings(text, limit):
    assert parse_limit(text) == limit


@pytest.mark.parametrize("text", ["fast", "10/fortnight", "0/s", "5/s burst 0"])
def test_bad_rate_limit_names_its_setting(text):
    with pytest.raises(SettingsError, match="PIXELSCENE_RATE_LIMIT_GENERATE"):
        ServiceSettings.load(environ={"PIXELSCENE_RATE_LIMIT_GENERATE": text})


@pytest.mark.integration
def test_token_bucket_is_atomic_on_a_real_redis(real_redis):
    limit, taken = Limit(0.001, 50), []

    def hammer():
        for _ in range(20):
            taken.append(take(real_redis, "pixelscene:rate:t", limit) == 0.0)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 160 and sum(taken) == 50


def test_openapi_lists_403_and_429(keyed):
    doc = keyed.get("/openapi.json").get_json()
    training = doc["paths"]["/v1/trainings"]["post"]["responses"]
    assert {"401", "403", "429"} <= set(training)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path not in ("/v1/health", "/openapi.json"):
                assert "429" in op["responses"], (path, method)
            # 403 only where a view needs more than a generate key, and says which role
            needs_role = op.get("description", "").startswith("Needs a key with the")
            assert ("403" in op["responses"]) == needs_role, (path, method)
    webhook = doc["components"]["schemas"]["Job"]["properties"]["webhook"]
    assert webhook["properties"]["status"]["enum"] == [
        "pending", "retrying", "delivered", "refused", "failed"
    ]  # fmt: skip
