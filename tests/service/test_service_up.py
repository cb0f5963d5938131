"""`pixelscene up`: the supervision loop (fake children) and children dying with `up`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.commands.up import supervise

ROOT = Path(__file__).resolve().parent.parent.parent


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


@pytest.mark.parametrize("core_name", ["API", "Redis"])
def test_api_or_redis_death_stops_everything(core_name, caplog):
    core = {"API": FakeChild("api"), "Redis": FakeChild("redis")}
    workers = [FakeChild("worker-0")]

    def until(stop: FakeStop) -> bool:
        if stop.now >= 1.0:
            core[core_name].returncode = 1
            workers[0].returncode = 1  # dies too; must not be respawned
        return False

    rc, spawned, _ = run_supervise(core, workers, until, interval=0.5)
    assert rc == 1 and spawned == []
    assert f"{core_name} exited with status 1; stopping" in caplog.text


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
