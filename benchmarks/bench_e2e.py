"""End-to-end latency: POST /v1/generations until the PNG is fetched, minus the model's time.

Starts redis-server + the API + one worker, submits jobs one at a time and polls tightly
(2 ms). Overhead per job = (POST sent -> PNG received) - output.timings.generate_s (the
pipeline's own time). Target: median overhead under 100 ms.

    python benchmarks/bench_e2e.py --jobs 50 [--model-dir DIR]

Without --model-dir it uses a random-weight model folder (pixelscene.testing); with --fake,
the stand-in pipeline of the tests (no ML at all: pure service overhead).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import ROOT, Stack, percentile  # noqa: E402


def worker_env(args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    if args.fake:
        return {
            "PIXELSCENE_PIPELINE_LOADER": "service_fakes:load",
            "PYTHONPATH": str(ROOT / "tests" / "service"),
        }
    model_dir = args.model_dir
    if model_dir is None:
        from pixelscene.testing import make_random_model_dir

        model_dir = make_random_model_dir(tmp / "model")
    return {"PIXELSCENE_MODELS": f"tiny={model_dir}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--n", type=int, default=1, help="images per job")
    parser.add_argument("--model-dir", help="model folder (default: random-weight micro model)")
    parser.add_argument("--fake", action="store_true", help="stand-in pipeline, no ML")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stack = Stack(tmp, workers=1, env=worker_env(args, tmp))
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)

        def call(method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()

        overheads, totals, model_times = [], [], []
        waits, runs, writes = [], [], []
        try:
            for i in range(args.jobs + 1):  # the first job loads the model: not counted
                t0 = time.perf_counter()
                status, data = call("POST", "/v1/generations", {"prompt": "a tower", "n": args.n})
                assert status == 202, data
                job_id = json.loads(data)["id"]
                while True:
                    status, data = call("GET", f"/v1/jobs/{job_id}")
                    job = json.loads(data)
                    if job["status"] in ("succeeded", "failed", "canceled"):
                        break
                    time.sleep(0.002)
                assert job["status"] == "succeeded", job
                status, png = call("GET", job["output"]["images"][-1]["url"])
                assert status == 200 and png[:4] == b"\x89PNG"
                total = time.perf_counter() - t0
                if i == 0:
                    continue
                model_s = job["output"]["timings"]["generate_s"]
                totals.append(total)
                model_times.append(model_s)
                overheads.append(total - model_s)
                created, started, finished = (
                    datetime.fromisoformat(job[k])
                    for k in ("created_at", "started_at", "finished_at")
                )
                waits.append((started - created).total_seconds())
                runs.append((finished - started).total_seconds() - model_s)
                writes.append(job["output"]["timings"]["write_s"])
        finally:
            conn.close()
            stack.close()

    ms = 1000.0
    print(f"{args.jobs} jobs of {args.n} image(s), {'fake' if args.fake else 'real'} pipeline")
    print(
        f"POST -> PNG: median {statistics.median(totals) * ms:.1f} ms; model's own time: "
        f"median {statistics.median(model_times) * ms:.1f} ms"
    )
    print(
        f"overhead (total - model): median {statistics.median(overheads) * ms:.1f} ms, "
        f"p90 {percentile(overheads, 90) * ms:.1f} ms, max {max(overheads) * ms:.1f} ms"
    )
    print(
        f"  of which: queue wait (created -> started) median {statistics.median(waits) * ms:.1f} ms;"
        f" worker time besides the model {statistics.median(runs) * ms:.1f} ms"
        f" (writing files {statistics.median(writes) * ms:.1f} ms); the rest is polling and HTTP"
    )
    med = statistics.median(overheads) * ms
    print(f"target overhead < 100 ms: {'met' if med < 100 else 'MISSED'}")


if __name__ == "__main__":
    main()
