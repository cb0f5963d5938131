"""Load test of the API on loopback: C clients doing submit + poll for S seconds.

Starts a private redis-server and `pixelscene serve` (waitress), then C client threads each
loop POST /v1/generations then GET /v1/jobs/<id> over keep-alive connections. Prints
requests/s, p50/p99 latency of POST and GET, and jobs lost: accepted jobs (202) that are not
in Redis afterwards (record + queue entry). Targets: POST p99 < 50 ms, 0 lost.

    python benchmarks/bench_load.py --seconds 60 --clients 8
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Stack:
    """redis-server + API (+ optional workers) as child processes, for benchmarks."""

    def __init__(self, data_dir: Path, workers: int = 0, env: dict[str, str] | None = None):
        from workers.redis_server import RedisServer, free_port

        self.data_dir = data_dir
        self.redis = RedisServer(data_dir / "redis").start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            PIXELSCENE_REDIS_URL=self.redis.url,
            PIXELSCENE_OBJECTS_DIR=str(data_dir / "objects"),
            PIXELSCENE_MAX_QUEUE="1000000",
            **(env or {}),
        )
        py = [sys.executable, "-m", "pixelscene"]
        self.procs = [
            subprocess.Popen(
                py + ["serve", "--port", str(self.port), "--threads", "16"],
                env=self.env,
                cwd=ROOT,
                stderr=subprocess.DEVNULL,
            )
        ]
        for i in range(workers):
            self.procs.append(
                subprocess.Popen(
                    py + ["worker", "--name", f"bench-{i}"],
                    env=self.env,
                    cwd=ROOT,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/v1/health", timeout=1) as r:
                    health = json.loads(r.read())
                if len(health["workers"]) >= workers:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the stack did not come up")
            time.sleep(0.1)

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.redis.stop()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def client_loop(port: int, stop: threading.Event, out: dict[str, list]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"prompt": "a castle on a hill at sunset", "n": 1})
    headers = {"Content-Type": "application/json"}
    i = 0
    while not stop.is_set():
        i += 1
        t0 = time.perf_counter()
        conn.request("POST", "/v1/generations", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        t1 = time.perf_counter()
        out["post"].append(t1 - t0)
        if resp.status != 202:
            out["errors"].append(resp.status)
            continue
        job_id = json.loads(data)["id"]
        out["ids"].append(job_id)
        conn.request("GET", f"/v1/jobs/{job_id}")
        resp = conn.getresponse()
        resp.read()
        out["get"].append(time.perf_counter() - t1)
        if resp.status != 200:
            out["errors"].append(resp.status)
    conn.close()


def count_lost(redis_url: str, ids: list[str]) -> int:
    """Accepted jobs with no record or not queued/started/finished in RQ."""
    import redis

    r = redis.Redis.from_url(redis_url)
    lost = 0
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        with r.pipeline(transaction=False) as p:
            for job_id in chunk:
                p.hget(f"pixelscene:job:{job_id}", "status")
                p.exists(f"rq:job:{job_id}")
            rows = p.execute()
        for status, rq_exists in zip(rows[::2], rows[1::2], strict=True):
            if status is None or not rq_exists:
                lost += 1
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        try:
            out: dict[str, list] = {"post": [], "get": [], "ids": [], "errors": []}
            stop = threading.Event()
            threads = [
                threading.Thread(target=client_loop, args=(stack.port, stop, out))
                for _ in range(args.clients)
            ]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            lost = count_lost(stack.redis.url, out["ids"])
        finally:
            stack.close()

    total = len(out["post"]) + len(out["get"])
    ms = 1000.0
    print(f"clients {args.clients}, {elapsed:.1f} s, {total} requests: {total / elapsed:.0f} req/s")
    print(
        f"POST /v1/generations: n={len(out['post'])} p50 {percentile(out['post'], 50) * ms:.1f} ms"
        f"  p99 {percentile(out['post'], 99) * ms:.1f} ms  mean {statistics.fmean(out['post']) * ms:.1f} ms"
    )
    print(
        f"GET  /v1/jobs/<id>:   n={len(out['get'])} p50 {percentile(out['get'], 50) * ms:.1f} ms"
        f"  p99 {percentile(out['get'], 99) * ms:.1f} ms"
    )
    print(f"jobs accepted {len(out['ids'])}, lost {lost}, errors {len(out['errors'])}")
    p99 = percentile(out["post"], 99) * ms
    print(f"target POST p99 < 50 ms: {'met' if p99 < 50 else 'MISSED'}; lost == 0: {lost == 0}")


if __name__ == "__main__":
    main()
