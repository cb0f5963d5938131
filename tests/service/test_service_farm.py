"""The farm under load, faults and hostile input: a real redis-server, the real API
(`pixelscene serve` under waitress, in its own process), real `pixelscene worker` processes
with the fake pipeline (service_fakes). Figures are printed (`pytest -s`); docs/reliability.md
records them.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rq import Worker
from service_fakes import RAISE, wait_for

from workers.jobstore.records import Keys, get_job
from workers.redis_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
GEN_A, GEN_B, ADMIN, WORKER = "key-a", "key-b", "key-admin", "key-worker"
KEYS_ENV = {
    "PIXELSCENE_API_KEYS": f"{GEN_A},{GEN_B}",
    "PIXELSCENE_ADMIN_KEYS": ADMIN,
    "PIXELSCENE_WORKER_KEYS": WORKER,
    "PIXELSCENE_WEBHOOK_SECRET": "test-secret",
}
FINAL = ("succeeded", "failed", "canceled")
# POST p99 the load test asserts; the target is 50 ms, met on a quiet machine (the test
# prints the figure). A shared CI runner gets slack; PIXELSCENE_LOAD_P99_MS tightens it.
P99_LIMIT_MS = float(os.environ.get("PIXELSCENE_LOAD_P99_MS", "200"))


class Api:
    """`pixelscene serve` in a subprocess, restartable on the same port."""

    def __init__(self, redis_url: str, objects: Path, env: dict[str, str], log: Path) -> None:
        self.redis_url, self.objects, self.env, self.log = redis_url, objects, env, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Api:
        cmd = [sys.executable, "-m", "pixelscene", "serve", "--port", str(self.port)]
        cmd += ["--redis", self.redis_url, "--objects-dir", str(self.objects), "--threads", "16"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, env={**os.environ, **self.env}, cwd=ROOT, stdout=log, stderr=log
            )
        wait_for(self._is_up, 60, 0.1)
        return self

    def _is_up(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return self.call("GET", "/v1/health", key=None)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        key: str | None = GEN_A,
        headers: dict[str, str] | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, http.client.HTTPResponse, Any]:
        """(status, response, JSON or bytes). `body`: JSON-able, or str/bytes sent as is."""
        own = conn is None
        conn = conn or self.connect()
        hdrs = {"Authorization": f"Bearer {key}"} if key else {}
        data = body
        if body is not None and not isinstance(body, str | bytes):
            data = json.dumps(body)
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            if own:
                conn.close()
        is_json = resp.getheader("Content-Type", "").startswith("application/json")
        return resp.status, resp, json.loads(raw) if is_json and raw else raw


@pytest.fixture
def start_api(redis_server, real_redis, tmp_path):
    apis: list[Api] = []

    def start(**env: str) -> Api:
        api = Api(redis_server.url, tmp_path / "objects", {**KEYS_ENV, **env}, tmp_path / "api.log")
        apis.append(api.start())
        return api

    yield start
    for api in apis:
        api.stop()


def remote_env(api: Api, folder: Path) -> dict[str, str]:
    """A worker that cannot see the API's object directory: a URL and a key."""
    return {
        "PIXELSCENE_OBJECTS_DIR": str(folder),
        "PIXELSCENE_RESULTS_URL": api.url,
        "PIXELSCENE_WORKER_KEY": WORKER,
    }


def submit(api: Api, key: str = GEN_A, conn: Any = None, **body: Any) -> str:
    status, _, doc = api.call(
        "POST", "/v1/generations", {"prompt": "a castle at dusk", **body}, key=key, conn=conn
    )
    assert status == 202, doc
    return doc["id"]


def wait_final(api: Api, ids: list[str], timeout: float = 120) -> dict[str, dict]:
    """Poll every job (as admin) until each has ended; rides out an API restart."""
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    conn = api.connect()
    while len(done) < len(ids):
        assert time.monotonic() < deadline, f"{len(ids) - len(done)} jobs did not end"
        for job_id in ids:
            if job_id in done:
                continue
            try:
                status, _, doc = api.call("GET", f"/v1/jobs/{job_id}", key=ADMIN, conn=conn)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = api.connect()
                time.sleep(0.1)
                break
            assert status in (200, 503), doc
            if status == 200 and doc["status"] in FINAL:
                done[job_id] = doc
        else:
            time.sleep(0.05)
    conn.close()
    return done


def check_downloads(api: Api, jobs: dict[str, dict]) -> int:
    """Every image and code grid of every job downloads from the API; returns the count."""
    count = 0
    conn = api.connect()
    for doc in jobs.values():
        for image in doc["output"]["images"]:
            status, _, png = api.call("GET", image["url"], key=ADMIN, conn=conn)
            assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n", (status, image)
            status, _, codes = api.call("GET", image["codes_url"], key=ADMIN, conn=conn)
            assert status == 200 and len(codes["codes"]) == 13, status
            count += 1
    conn.close()
    return count


def worker_of(r: Any, job_id: str) -> str:
    return get_job(r, Keys(), job_id)["worker"]


# --------------------------------------------------------------------- results, no shared disk


def test_a_worker_without_the_object_directory_hands_results_to_the_api(
    start_api, fake_farm, real_redis, tmp_path
):
    api = start_api()
    mini = tmp_path / "mini"  # the Mac mini's own disk: the API never reads it
    slow = {"FAKE_STEP_SECONDS": "0.05"}
    fake_farm.spawn("w-shared", "generate", env=slow)  # the NFS/SMB mount, as before
    fake_farm.spawn("w-mini", "generate", env={**slow, **remote_env(api, mini)})
    fake_farm.wait_registered(real_redis, 2)
    ids = [submit(api, n=2, seed=i) for i in range(24)]
    jobs = wait_final(api, ids)
    assert {doc["status"] for doc in jobs.values()} == {"succeeded"}
    by_worker = Counter(worker_of(real_redis, job_id) for job_id in ids)
    assert set(by_worker) == {"w-shared", "w-mini"}, by_worker
    assert check_downloads(api, jobs) == 48
    for job_id in ids:
        assert (tmp_path / "objects" / "jobs" / job_id / "result.json").is_file()
    assert not list(mini.glob("jobs/*/*")), "the worker kept its local copies"
    assert not list((tmp_path / "objects").glob("jobs/*/.*.tmp"))
    print(f"results without a shared disk: {dict(by_worker)} jobs, 48 images downloaded")


# --------------------------------------------------------------------------------------- load


def test_load_three_workers_eight_clients_300_jobs(start_api, fake_farm, real_redis, tmp_path):
    api = start_api(PIXELSCENE_RATE_LIMIT_GENERATE="off", PIXELSCENE_MAX_QUEUE="1000")
    for i in range(3):
        fake_farm.spawn(f"w-load-{i}", "generate")
    fake_farm.wait_registered(real_redis, 3)
    clients, total = 8, 300
    latencies: list[float] = []
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(c: int) -> None:
        try:
            conn = api.connect()
            key = (GEN_A, GEN_B)[c % 2]
            start.wait()
            for j in range(c, total, clients):
                t = time.perf_counter()
                job_id = submit(api, key=key, conn=conn, seed=j, prompt=f"a tower, scene {j}")
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    ids.append(job_id)
            conn.close()
        except BaseException as e:  # noqa: BLE001 (re-raised in the test's thread)
            errors.append(e)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submit_s = time.perf_counter() - t0
    assert not errors, errors[0]
    jobs = wait_final(api, ids, timeout=180)
    wall = time.perf_counter() - t0

    assert len(ids) == len(set(ids)) == total
    assert Counter(doc["status"] for doc in jobs.values()) == {"succeeded": total}
    assert {doc["attempts"] for doc in jobs.values()} == {1}, "a job ran twice"
    ran = sum(w.successful_job_count for w in Worker.all(connection=real_redis))
    assert ran == total, f"workers ran {ran} jobs for {total} submitted"
    folders = list((tmp_path / "objects" / "jobs").glob("*/result.json"))
    assert len(folders) == total
    q = statistics.quantiles([x * 1000 for x in latencies], n=100)
    p50, p99 = statistics.median(latencies) * 1000, q[98]
    per_worker = Counter(worker_of(real_redis, job_id) for job_id in ids)
    print(
        f"\nload: {total} jobs from {clients} clients in {submit_s:.1f} s "
        f"({total / submit_s:.0f} POST/s), all done in {wall:.1f} s; POST p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies) * 1000:.1f} ms; per worker {dict(per_worker)}"
    )
    assert p99 < P99_LIMIT_MS, f"POST p99 {p99:.1f} ms"


# ------------------------------------------------------------------------------------- faults


def test_a_killed_worker_and_a_restarted_api_lose_nothing(
    start_api, fake_farm, real_redis, tmp_path
):
    api = start_api()
    slow = {"FAKE_STEP_SECONDS": "0.05", "PIXELSCENE_REAP_INTERVAL": "0.5"}
    fake_farm.spawn("w-victim", "generate", env=slow)
    fake_farm.spawn("w-mini", "generate", env={**slow, **remote_env(api, tmp_path / "mini")})
    fake_farm.wait_registered(real_redis, 2)
    ids = [submit(api, n=4, seed=10 * i) for i in range(30)]

    # kill -9 the worker in the middle of a job; a new worker joins.
    def victim_job() -> str | None:
        for job_id in ids:
            rec = get_job(real_redis, Keys(), job_id)
            if rec["status"] == "running" and rec.get("worker") == "w-victim":
                return job_id
        return None

    killed = wait_for(victim_job, 30)
    fake_farm.kill("w-victim")
    fake_farm.spawn("w-new", "generate", env=slow)

    # Restart the API while jobs run (the remote worker's uploads wait for it).
    api.stop()
    with pytest.raises(ConnectionRefusedError):
        api.call("GET", "/v1/health", key=None)
    t_down = time.monotonic()
    time.sleep(1.0)
    api.start()
    print(f"\nAPI down {time.monotonic() - t_down:.1f} s")

    jobs = wait_final(api, ids, timeout=120)
    assert Counter(doc["status"] for doc in jobs.values()) == {"succeeded": 30}
    assert jobs[killed]["attempts"] == 2
    assert worker_of(real_redis, killed) in ("w-mini", "w-new")
    assert {doc["attempts"] for job_id, doc in jobs.items() if job_id != killed} == {1}
    assert check_downloads(api, jobs) == 120
    assert not list((tmp_path / "mini").glob("jobs/*/*"))


def test_a_full_queue_answers_429_then_recovers(start_api, fake_farm, real_redis):
    api = start_api(PIXELSCENE_MAX_QUEUE="5")
    ids = [submit(api, seed=i) for i in range(5)]
    status, resp, doc = api.call("POST", "/v1/generations", {"prompt": "one too many"})
    assert status == 429 and doc["error"]["code"] == "queue_full", doc
    assert int(resp.getheader("Retry-After")) >= 1
    fake_farm.spawn("w-drain", "generate")
    wait_final(api, ids)
    ids.append(submit(api, prompt="room again"))
    assert wait_final(api, ids[-1:])[ids[-1]]["status"] == "succeeded"


def test_a_job_that_raises_fails_readably_and_the_worker_goes_on(start_api, fake_farm, real_redis):
    api = start_api()
    worker = fake_farm.spawn("w-sturdy", "generate")
    bad = submit(api, prompt=f"a castle {RAISE}")
    good = submit(api, prompt="a castle")
    jobs = wait_final(api, [bad, good])
    assert jobs[bad]["status"] == "failed" and jobs[bad]["attempts"] == 1
    assert jobs[bad]["error"] == {
        "code": "internal_error",
        "message": "the job failed with an internal error (ZeroDivisionError)",
    }
    assert jobs[good]["status"] == "succeeded"
    assert worker_of(real_redis, good) == "w-sturdy" and worker.poll() is None
    status, _, doc = api.call("GET", f"/v1/jobs/{bad}/images/0.png")
    assert status == 404 and doc["error"]["code"] == "image_not_found"


@pytest.fixture
def small_disk(tmp_path):
    """The API's object directory on a 1 MiB tmpfs, filled up; None where mounting is not
    allowed (not root): the test then limits the worker's file size instead (EFBIG)."""
    folder = tmp_path / "objects"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]
    mounted = os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0
    if not mounted:
        yield None
        return
    filler = folder / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC
    try:
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_object_directory_fails_the_job_clearly(
    small_disk, start_api, fake_farm, real_redis, tmp_path
):
    if small_disk is None and not hasattr(resource, "prlimit"):
        pytest.skip("needs a tmpfs (root on Linux) or prlimit (Linux) to fill the disk")
    api = start_api()
    objects = tmp_path / "objects"
    worker = fake_farm.spawn("w-full", "generate")
    if small_disk is None:  # Linux: a file size limit makes the PNG's write fail (EFBIG)
        resource.prlimit(worker.pid, resource.RLIMIT_FSIZE, (2000, 2000))
    full = submit(api, n=2)
    doc = wait_final(api, [full])[full]
    assert doc["status"] == "failed" and doc["output"] is None
    assert doc["error"] == {
        "code": "storage_full",
        "message": "the object directory is full: no space left to write the results",
    }
    for path in (f"/v1/jobs/{full}/images/0.png", f"/v1/jobs/{full}/codes/0.json"):
        assert api.call("GET", path)[0] == 404
    leftovers = [p.name for p in (objects / "jobs" / full).glob("*")]
    assert not [n for n in leftovers if n.endswith(".tmp")], leftovers
    if small_disk is None:
        print("\nno tmpfs (not root): the worker's file size was limited instead")
        return
    # A worker without the directory: the API says 507 and the job fails the same way.
    fake_farm.kill("w-full")
    fake_farm.spawn("w-mini", "generate", env=remote_env(api, tmp_path / "mini"))
    remote = submit(api, n=2)
    doc = wait_final(api, [remote])[remote]
    assert doc["status"] == "failed" and doc["error"]["code"] == "storage_full", doc
    assert "full" in doc["error"]["message"]
    assert not list((objects / "jobs" / remote).glob("*.png"))
    # Space again: jobs succeed.
    small_disk.unlink()
    again = submit(api, n=2)
    jobs = wait_final(api, [again])
    assert jobs[again]["status"] == "succeeded"
    assert check_downloads(api, jobs) == 2


# ---------------------------------------------------------------------------- hostile input

JOB = "{job}"  # replaced by a real job of key A
BIG = 10 * 2**20
# (what, method, path, key, body, headers, status, error code). A str body is sent as is.
HOSTILE: list[tuple[str, str, str, str | None, Any, dict, int, str]] = [
    ("prompt is a number", "POST", "/v1/generations", GEN_A, {"prompt": 5}, {}, 400, "invalid_request"),
    ("prompt is a list", "POST", "/v1/generations", GEN_A, {"prompt": ["a"]}, {}, 400, "invalid_request"),
    ("n is a string", "POST", "/v1/generations", GEN_A, {"prompt": "a", "n": "4"}, {}, 400, "invalid_request"),
    ("n is 2.5", "POST", "/v1/generations", GEN_A, {"prompt": "a", "n": 2.5}, {}, 400, "invalid_request"),
    ("n is true", "POST", "/v1/generations", GEN_A, {"prompt": "a", "n": True}, {}, 400, "invalid_request"),
    ("n is 0", "POST", "/v1/generations", GEN_A, {"prompt": "a", "n": 0}, {}, 400, "invalid_request"),
    ("n is 10**30", "POST", "/v1/generations", GEN_A, {"prompt": "a", "n": 10**30}, {}, 400, "invalid_request"),
    ("n is -1", "POST", "/v1/generations", GEN_A, {"prompt": "a", "n": -1}, {}, 400, "invalid_request"),
    ("seed is -1", "POST", "/v1/generations", GEN_A, {"prompt": "a", "seed": -1}, {}, 400, "invalid_request"),
    ("seed is 2**31", "POST", "/v1/generations", GEN_A, {"prompt": "a", "seed": 2**31}, {}, 400, "invalid_request"),
    ("seed is 1e400", "POST", "/v1/generations", GEN_A, '{"prompt": "a", "seed": 1e400}', {}, 400, "invalid_request"),
    ("temperature NaN", "POST", "/v1/generations", GEN_A, '{"prompt": "a", "temperature": NaN}', {}, 400, "invalid_request"),
    ("temperature Infinity", "POST", "/v1/generations", GEN_A, '{"prompt": "a", "temperature": Infinity}', {}, 400, "invalid_request"),
    ("top_p -Infinity", "POST", "/v1/generations", GEN_A, '{"prompt": "a", "top_p": -Infinity}', {}, 400, "invalid_request"),
    ("top_k -5", "POST", "/v1/generations", GEN_A, {"prompt": "a", "top_k": -5}, {}, 400, "invalid_request"),
    ("cfg_scale a string", "POST", "/v1/generations", GEN_A, {"prompt": "a", "cfg_scale": "3"}, {}, 400, "invalid_request"),
    ("scale 1000", "POST", "/v1/generations", GEN_A, {"prompt": "a", "scale": 1000}, {}, 400, "invalid_request"),
    ("palette path", "POST", "/v1/generations", GEN_A, {"prompt": "a", "palette": "../../etc/passwd"}, {}, 400, "invalid_request"),
    ("model path", "POST", "/v1/generations", GEN_A, {"prompt": "a", "model": "../tiny"}, {}, 400, "invalid_request"),
    ("unknown field", "POST", "/v1/generations", GEN_A, {"prompt": "a", "admin": True}, {}, 400, "invalid_request"),
    ("empty prompt", "POST", "/v1/generations", GEN_A, {"prompt": ""}, {}, 400, "invalid_request"),
    ("blank prompt", "POST", "/v1/generations", GEN_A, {"prompt": " \u3000\t"}, {}, 400, "invalid_request"),
    ("501-character prompt", "POST", "/v1/generations", GEN_A, {"prompt": "a" * 501}, {}, 400, "invalid_request"),
    ("NUL in the prompt", "POST", "/v1/generations", GEN_A, {"prompt": "a\x00b"}, {}, 400, "invalid_request"),
    ("escape sequence in the prompt", "POST", "/v1/generations", GEN_A, {"prompt": "a\x1b[31mred"}, {}, 400, "invalid_request"),
    ("RTL override in the prompt", "POST", "/v1/generations", GEN_A, {"prompt": "castle \u202eesuoh"}, {}, 400, "invalid_request"),
    ("RTL isolate in the prompt", "POST", "/v1/generations", GEN_A, {"prompt": "\u2067a\u2069"}, {}, 400, "invalid_request"),
    ("lone surrogate", "POST", "/v1/generations", GEN_A, '{"prompt": "a\\ud800"}', {}, 400, "invalid_request"),
    ("body is a list", "POST", "/v1/generations", GEN_A, "[]", {}, 400, "invalid_request"),
    ("body is null", "POST", "/v1/generations", GEN_A, "null", {}, 400, "invalid_json"),
    ("broken JSON", "POST", "/v1/generations", GEN_A, '{"prompt": ', {}, 400, "invalid_json"),
    ("JSON nested 50000 deep", "POST", "/v1/generations", GEN_A, "[" * 50000, {}, 400, "invalid_json"),
    ("text/plain", "POST", "/v1/generations", GEN_A, '{"prompt": "a"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("10 MB body", "POST", "/v1/generations", GEN_A, '{"prompt": "' + "a" * BIG + '"}', {}, 413, "payload_too_large"),
    ("webhook to cloud metadata", "POST", "/v1/generations", GEN_A, {"prompt": "a", "webhook": "http://169.254.169.254/latest"}, {}, 400, "invalid_request"),
    ("webhook to a file", "POST", "/v1/generations", GEN_A, {"prompt": "a", "webhook": "file:///etc/passwd"}, {}, 400, "invalid_request"),
    ("Idempotency-Key reused, other body", "POST", "/v1/generations", GEN_A, {"prompt": "another"}, {"Idempotency-Key": "hostile-1"}, 422, "idempotency_key_reused"),
    ("empty Idempotency-Key", "POST", "/v1/generations", GEN_A, {"prompt": "a"}, {"Idempotency-Key": ""}, 400, "invalid_idempotency_key"),
    ("no key", "POST", "/v1/generations", None, {"prompt": "a"}, {}, 401, "unauthorized"),
    ("wrong key", "GET", "/v1/jobs", "key-c", None, {}, 401, "unauthorized"),
    ("Basic, not Bearer", "GET", "/v1/jobs", None, None, {"Authorization": f"Basic {GEN_A}"}, 401, "unauthorized"),
    ("worker key queues a job", "POST", "/v1/generations", WORKER, {"prompt": "a"}, {}, 403, "forbidden"),
    ("worker key reads jobs", "GET", f"/v1/jobs/{JOB}", WORKER, None, {}, 403, "forbidden"),
    ("generate key trains", "POST", "/v1/trainings", GEN_A, {"stage": "vqgan", "dataset": "d"}, {}, 403, "forbidden"),
    ("generate key reads metrics", "GET", "/metrics", GEN_A, None, {}, 403, "forbidden"),
    ("generate key uploads results", "PUT", f"/v1/internal/jobs/{JOB}/objects/0.png", GEN_A, b"x", {}, 403, "forbidden"),
    ("another key's job", "GET", f"/v1/jobs/{JOB}", GEN_B, None, {}, 404, "job_not_found"),
    ("another key's image", "GET", f"/v1/jobs/{JOB}/images/0.png", GEN_B, None, {}, 404, "job_not_found"),
    ("cancel another key's job", "DELETE", f"/v1/jobs/{JOB}", GEN_B, None, {}, 404, "job_not_found"),
    ("job id ../", "GET", "/v1/jobs/../../etc/passwd", GEN_A, None, {}, 404, "not_found"),
    ("job id %2e%2e%2f", "GET", "/v1/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd", GEN_A, None, {}, 404, "not_found"),
    ("job id with NUL", "GET", f"/v1/jobs/{JOB}%00", GEN_A, None, {}, 404, "job_not_found"),
    ("job id in capitals", "GET", "/v1/jobs/{JOB}", GEN_A, None, {}, 404, "job_not_found"),
    ("image ../result.json", "GET", f"/v1/jobs/{JOB}/images/..%2fresult.json", GEN_A, None, {}, 404, "not_found"),
    ("image -1", "GET", f"/v1/jobs/{JOB}/images/-1.png", GEN_A, None, {}, 404, "not_found"),
    ("image 10**20", "GET", f"/v1/jobs/{JOB}/images/{10**20}.png", GEN_A, None, {}, 404, "image_not_found"),
    ("upload to ../", "PUT", f"/v1/internal/jobs/{JOB}/objects/..%2f..%2fx.png", WORKER, b"x", {}, 404, "not_found"),
    ("upload a script", "PUT", f"/v1/internal/jobs/{JOB}/objects/run.sh", WORKER, b"x", {}, 400, "invalid_object_name"),
    ("upload to a finished job", "PUT", f"/v1/internal/jobs/{JOB}/objects/result.json", WORKER, b"{}", {"X-Pixelscene-Worker": "w-hostile"}, 409, "job_not_running_here"),
    ("list limit 0", "GET", "/v1/jobs?limit=0", GEN_A, None, {}, 400, "invalid_request"),
    ("list limit 10**30", "GET", f"/v1/jobs?limit={10**30}", GEN_A, None, {}, 400, "invalid_request"),
    ("list, unknown parameter", "GET", "/v1/jobs?owner=everyone", GEN_A, None, {}, 400, "invalid_request"),
]  # fmt: skip


def test_hostile_requests_get_their_documented_4xx(start_api, fake_farm, real_redis):
    api = start_api()
    fake_farm.spawn("w-hostile", "generate")
    headers = {"Idempotency-Key": "hostile-1"}
    status, _, doc = api.call(
        "POST", "/v1/generations", {"prompt": "a keep"}, headers=headers
    )  # fmt: skip
    assert status == 202, doc
    job = doc["id"]
    assert wait_final(api, [job])[job]["status"] == "succeeded"
    wrong = []
    for what, method, path, key, body, extra, want, code in HOSTILE:
        path = path.replace("{JOB}", job.upper()).replace(JOB, job)
        status, _, doc = api.call(method, path, body, key=key, headers=extra)
        got = doc["error"]["code"] if isinstance(doc, dict) else doc[:80]
        if (status, got) != (want, code):
            wrong.append(f"{what}: {status} {got}, documented {want} {code}")
    assert not wrong, "\n".join(wrong)
    # None of them made a job, and the server still serves.
    status, _, listed = api.call("GET", "/v1/jobs", key=ADMIN)
    assert [j["id"] for j in listed["jobs"]] == [job]
    assert api.call("GET", f"/v1/jobs/{job}/images/0.png")[0] == 200
    print(f"\nhostile requests: {len(HOSTILE)}, each answered as documented")
