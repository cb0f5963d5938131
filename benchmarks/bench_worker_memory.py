"""Worker memory over many jobs: RSS and MLX memory at the start and the end.

Runs a `PixelsceneWorker` in this process against a private redis-server, feeding it jobs in
batches, and samples the process RSS, MLX active memory and each job's MLX peak. A worker
that leaks grows between the first and last batch; target: flat.

    python benchmarks/bench_worker_memory.py --jobs 500 [--model-dir DIR | --fake]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import ROOT  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--n", type=int, default=1, help="images per job")
    parser.add_argument("--model-dir")
    parser.add_argument("--fake", action="store_true", help="stand-in pipeline (no ML)")
    args = parser.parse_args()

    import mlx.core as mx
    import redis
    from rq import Queue

    from workers.jobstore.queues import enqueue_job
    from workers.redis_server import RedisServer
    from workers.registry import ModelRegistry
    from workers.settings import Settings
    from workers.worker import PixelsceneWorker

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.fake:
            sys.path.insert(0, str(ROOT / "tests" / "service"))
            from service_fakes import FakePixelScene

            model = FakePixelScene()
            registry_args = {"loader": lambda _d: model, "versioner": lambda _d: "fake"}
            folder = ""
        else:
            folder = args.model_dir
            if folder is None:
                from pixelscene.testing import make_random_model_dir

                folder = str(make_random_model_dir(tmp / "model"))
            registry_args = {}
        server = RedisServer(tmp / "redis").start()
        try:
            settings = Settings.load(
                {
                    "redis_url": server.url,
                    "objects_dir": str(tmp / "objects"),
                    "models": {"tiny": folder},
                    "max_queue": 10**6,
                },
                environ={},
            )
            r = redis.Redis.from_url(server.url)
            registry = ModelRegistry(settings.models, **registry_args)
            rows = []
            done = 0
            while done < args.jobs:
                batch = min(args.batch, args.jobs - done)
                for _ in range(batch):
                    request = {"prompt": "a castle at dusk", "n": args.n, "seed": done}
                    request.update({"model": "tiny", "palette": "none", "scale": 1})
                    enqueue_job(r, settings, "generate", uuid.uuid4().hex, request)
                worker = PixelsceneWorker(
                    [Queue("generate", connection=r)],
                    connection=r,
                    settings=settings,
                    registry=registry,
                )
                worker.log.setLevel("WARNING")
                worker.work(burst=True, logging_level="WARNING")
                done += batch
                peaks = worker.job_peaks[-batch:]
                rows.append((done, rss_mb(), mx.get_active_memory() / 2**20, max(peaks) / 2**20))
                print(
                    f"after {done:4d} jobs: RSS {rows[-1][1]:7.1f} MB, MLX active "
                    f"{rows[-1][2]:6.1f} MB, per-job MLX peak {rows[-1][3]:6.1f} MB",
                    flush=True,
                )
            failed = r.zcard("rq:failed:generate")
        finally:
            server.stop()
    first, last = rows[0], rows[-1]
    print(
        f"RSS {first[1]:.1f} -> {last[1]:.1f} MB ({last[1] - first[1]:+.1f}); MLX active "
        f"{first[2]:.1f} -> {last[2]:.1f} MB; per-job peak {first[3]:.1f} -> {last[3]:.1f} MB; "
        f"failed jobs {failed}"
    )


if __name__ == "__main__":
    main()
