"""`pixelscene up`: the supervision loop (fake children) and children dying with `up`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_fakes import wait_for

from service.commands.up import supervise

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class FakeChild:
    def __init__(self, name: str) -> None:
        self.args = [name]
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class FakeStop:
    """A stop event on a fake clock: each wait advances time; `until` decides when to stop."""

    def __init__(self, until) -> None:
        self.now = 0.0
        self.until = until
        self.waits = 0

    def wait(self, timeout: float) -> bool:
        self.waits += 1
        assert self.waits < 10_000, "supervise never returned"
        self.now += timeout
        return self.until(self)


def run_supervise(core, workers, until, **kw):
    stop = FakeStop(until)
    spawned: list[tuple[int, float]] = []

    def spawn(i: int) -> FakeChild:
        spawned.append((i, stop.now))
        return FakeChild(f"worker-{i}")

    rc = supervise(core, workers, spawn, stop, clock=lambda: stop.now, **kw)  # type: ignore[arg-type]
    return rc, spawned, stop


def test_dead_worker_is_respawned_with_backoff(caplog):
    api, redis_ = FakeChild("api"), FakeChild("redis")
    workers = [FakeChild("worker-0"), FakeChild("worker-1")]
    first = workers[0]
    workers[0].returncode = -9  # killed at once, and again right after each respawn

    def until(stop: FakeStop) -> bool:
        if workers[0] is not first and workers[0].returncode is None:
            workers[0].returncode = -9
        return stop.now >= 10.0

    rc, spawned, _ = run_supervise(
        {"API": api, "Redis": redis_}, workers, until, interval=0.1, backoff=1.0, stable_after=60
    )
    assert rc == 0  # stopped by the event, not by the deaths
    assert [i for i, _ in spawned] == [0, 0, 0]  # only the dead slot, worker 1 left alone
    gaps = [b - a for (_, a), (_, b) in zip([(0, 0.0)] + spawned, spawned, strict=False)]
    # 1 s, then 2 s, then 4 s (+ the poll after the death was seen)
    assert [round(g) for g in gaps] == [1, 2, 4]
    assert workers[1].args == ["worker-1"] and workers[1].returncode is None
    assert "worker 0 exited with status -9; respawning it in 1.0 s" in caplog.text


def test_backoff_resets_after_a_stable_run():
    workers = [FakeChild("worker-0")]
    workers[0].returncode = 1
    deaths = {"n": 0}

    def until(stop: FakeStop) -> bool:
        # each respawned worker lives 100 s (> stable_after) then dies
        if workers[0].returncode is None and stop.now - spawned_at[-1] >= 100:
            workers[0].returncode = 1
            deaths["n"] += 1
        return deaths["n"] >= 3

    spawned_at = [0.0]
    stop = FakeStop(until)

    def spawn(i: int) -> FakeChild:
        spawned_at.append(stop.now)
        return FakeChild("worker-0")

    rc = supervise({}, workers, spawn, stop, interval=0.5, backoff=1.0, clock=lambda: stop.now)  # type: ignore[arg-type]
    assert rc == 0
    gaps = [b - a for a, b in zip(spawned_at, spawned_at[1:], strict=False)]
    assert all(g < 1.6 for g in gaps[:1]) and all(100 <= g < 102 for g in gaps[1:]), gaps


def test_api_death_stops_everything(caplog):
    core = {"API": FakeChild("api"), "Redis": FakeChild("redis")}
    workers = [FakeChild("worker-0")]

    def until(stop: FakeStop) -> bool:
        if stop.now >= 1.0:
            core["API"].returncode = 1
            workers[0].returncode = 1  # dies too; must not be respawned
        return False

    rc, spawned, _ = run_supervise(core, workers, until, interval=0.5)
    assert rc == 1 and spawned == []
    assert "API exited with status 1; stopping" in caplog.text


def test_redis_death_restarts_redis_with_backoff(caplog):
    """Redis is restarted (its data is on disk); the API and the workers are left running."""
    core = {"API": FakeChild("api"), "Redis": FakeChild("redis")}
    workers = [FakeChild("worker-0")]
    restarts: list[float] = []
    stop = FakeStop(lambda stop: stop.now >= 20.0)

    def restart_redis() -> FakeChild:
        restarts.append(stop.now)
        child = FakeChild("redis")
        child.returncode = 1 if len(restarts) < 3 else None  # the first two restarts fail
        return child

    core["Redis"].returncode = -9
    rc = supervise(
        core, workers, lambda i: FakeChild("never"), stop,  # type: ignore[arg-type]
        restart={"Redis": restart_redis}, interval=0.1, clock=lambda: stop.now,
    )  # fmt: skip
    assert rc == 0 and workers[0].args == ["worker-0"]  # no worker respawned
    gaps = [b - a for a, b in zip([0.0, *restarts], restarts, strict=False)]
    assert [round(g) for g in gaps] == [1, 2, 4]
    assert "Redis exited with status -9; respawning it in 1.0 s" in caplog.text


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux only")
def test_children_die_with_a_killed_up():
    """A child started by `up`'s _spawn gets SIGTERM when `up` is killed with SIGKILL."""
    parent_code = (
        "import os, sys, time\n"
        "from service.commands.up import _spawn\n"
        "child = _spawn([sys.executable, '-c', 'import time; time.sleep(60)'], dict(os.environ))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child_pid), "the child outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if "child_pid" in locals() and _alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its new parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_share_the_cores_between_their_threads():
    from service.commands.up import thread_share_env

    both = ("OPENBLAS_NUM_THREADS", "PIXELSCENE_SAMPLER_THREADS")
    assert thread_share_env({}, workers=1, cores=2) == dict.fromkeys(both, "2")
    assert thread_share_env({}, workers=2, cores=2) == dict.fromkeys(both, "1")
    assert thread_share_env({}, workers=4, cores=2) == dict.fromkeys(both, "1")
    set_one = thread_share_env({"OPENBLAS_NUM_THREADS": "3"}, workers=2, cores=8)
    assert set_one == {"PIXELSCENE_SAMPLER_THREADS": "4"}


class FakeProcess(FakeChild):
    """A child that exits `exits_after` fake seconds after its SIGTERM (None: never)."""

    def __init__(self, name: str, clock: FakeStop, exits_after: float | None) -> None:
        super().__init__(name)
        self.clock, self.exits_after = clock, exits_after
        self.termed_at: float | None = None
        self.killed_at: float | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self.termed_at is not None and self.exits_after is not None:
            if self.clock.now >= self.termed_at + self.exits_after:
                self.returncode = 0
        return self.returncode

    def send_signal(self, sig: int) -> None:
        assert sig == signal.SIGTERM
        self.termed_at = self.clock.now

    def kill(self) -> None:
        self.killed_at, self.returncode = self.clock.now, -9

    def wait(self, timeout: float | None = None) -> int | None:
        return self.poll()


def test_stopping_waits_for_a_workers_current_job():
    """SIGTERM asks a worker to finish its job first: `up` waits up to the worker's grace."""
    from service.commands.up import stop_children

    clock = FakeStop(lambda stop: False)
    api = FakeProcess("api", clock, 0.2)
    busy = FakeProcess("worker-0", clock, 200.0)  # a job far longer than 15 s
    stuck = FakeProcess("worker-1", clock, None)
    graces = [(api, 15.0), (busy, 930.0), (stuck, 930.0)]
    stop_children(graces, clock, clock=lambda: clock.now)  # type: ignore[arg-type]
    assert api.returncode == 0 and api.killed_at is None
    assert busy.returncode == 0 and busy.killed_at is None  # finished, not killed
    assert stuck.killed_at is not None and 930.0 <= stuck.killed_at < 931.0


def test_a_second_ctrl_c_stops_the_workers_at_once():
    from service.commands.up import stop_children

    clock = FakeStop(lambda stop: stop.now >= 5.0)  # the force event: set 5 s in
    busy = FakeProcess("worker-0", clock, 200.0)
    stop_children([(busy, 930.0)], clock, clock=lambda: clock.now)  # type: ignore[arg-type]
    assert busy.killed_at is not None and 5.0 <= busy.killed_at < 6.0


# ------------------------------------------------------------------ `pixelscene up`, for real

TERMINAL = ("succeeded", "failed", "canceled")


class Up:
    """`pixelscene up` on a data dir with the fake pipeline, and HTTP calls to its API."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        from workers.redis_server import free_port

        self.data_dir, self.port = data_dir, free_port()
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]),
            PIXELSCENE_PIPELINE_LOADER="service_fakes:load",
            PIXELSCENE_ENGINE="mlx",  # no CPU-engine warm-up: the fake pipeline never samples
            PIXELSCENE_HEARTBEAT_TTL="2",
            PIXELSCENE_REAP_INTERVAL="0.5",
            **env,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Up:
        self.starts += 1
        self.log = self.data_dir.parent / f"up-{self.starts}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pixelscene", "up", "--port", str(self.port)]
                + ["--data-dir", str(self.data_dir)],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        wait_for(lambda: self._check_running() and "is up" in self.log.read_text(), 60, 0.05)
        return self

    def _check_running(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, f"up exited: {self.log.read_text()[-3000:]}"
        return True

    def redis_url(self) -> str:
        return self.log.read_text().split("Redis on ", 1)[1].split()[0]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal `up`; then wait until its API port and Redis are free for the next start."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(30)
        if sig in (signal.SIGTERM, signal.SIGINT):
            assert rc == 0, self.log.read_text()[-3000:]
        wait_for(self._port_free, 30, 0.05)

    def _port_free(self) -> bool:
        import socket

        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError:
                return False
            return True

    def call(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
        import json
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read())

    def submit(self, prompt: str, key: str | None = None) -> tuple[int, dict]:
        headers = {"Idempotency-Key": key} if key else {}
        return self.call("POST", "/v1/generations", {"prompt": prompt}, headers)

    def job(self, job_id: str) -> dict:
        status, doc = self.call("GET", f"/v1/jobs/{job_id}")
        assert status == 200, (status, doc)
        return doc

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def up(tmp_path):
    made: list[Up] = []

    def make(**env: str) -> Up:
        made.append(Up(tmp_path / "data", **env))
        return made[-1]

    yield make
    for u in made:
        u.close()


@pytest.mark.integration
def test_jobs_and_idempotency_keys_survive_restarts_of_up(up):
    """Queued jobs, job records and Idempotency-Keys outlive `up`: Ctrl-C, SIGTERM, kill -9."""
    farm = up(FAKE_STEP_SECONDS="0.3").start()  # ~1.2 s a job: most of them wait in the queue
    jobs = {}
    for i in range(4):
        status, doc = farm.submit(f"a castle {i}", key=f"order-{i}")
        assert status == 202, doc
        jobs[f"order-{i}"] = (f"a castle {i}", doc["id"])
    assert "queued" in {farm.job(job_id)["status"] for _, job_id in jobs.values()}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        farm.stop(sig)
        farm.start()
        for key, (prompt, job_id) in jobs.items():
            assert farm.job(job_id)["id"] == job_id
            status, doc = farm.submit(prompt, key=key)
            assert (status, doc["id"]) == (202, job_id), (sig, key, doc)
    # The queue survived too, not just the records: every job runs to its end.
    wait_for(lambda: all(farm.job(j)["status"] in TERMINAL for _, j in jobs.values()), 60)


@pytest.mark.integration
def test_a_killed_redis_is_restarted_and_the_api_recovers(up):
    import redis

    farm = up().start()
    _, doc = farm.submit("a lighthouse")
    job_id = doc["id"]
    wait_for(lambda: farm.job(job_id)["status"] == "succeeded", 30)
    client = redis.Redis.from_url(farm.redis_url())
    old_pid = client.info("server")["process_id"]
    os.kill(old_pid, signal.SIGKILL)
    answers: list[int] = []

    def answered() -> bool:
        answers.append(farm.call("GET", f"/v1/jobs/{job_id}")[0])
        return answers[-1] == 200 and len(answers) > 1

    wait_for(answered, 30, 0.05)
    assert set(answers) <= {200, 503}, answers  # 503 while Redis is down, never a 500
    assert client.info("server")["process_id"] != old_pid
    assert farm.proc is not None and farm.proc.poll() is None
    # The worker carries on with the new Redis.
    _, doc = farm.submit("a lighthouse at dawn")
    wait_for(lambda: farm.job(doc["id"])["status"] == "succeeded", 30)
    client.close()


@pytest.mark.integration
def test_a_second_redis_on_the_same_data_dir_is_refused(tmp_path):
    """Two servers on one data dir would write one append-only file (a second `up`, or a new
    `up` while the Redis of a killed one still runs): the second waits, then refuses."""
    from pixelscene.errors import PixelsceneError
    from workers.redis_server import RedisServer

    with RedisServer(tmp_path, unix_socket=True) as first:
        with pytest.raises(PixelsceneError, match="another redis-server"):
            RedisServer(tmp_path, unix_socket=True).start(timeout=0.5)
        assert first.process is not None and first.process.poll() is None
    second = RedisServer(tmp_path, unix_socket=True).start()  # the first is gone: fine
    second.stop()
