"""`pixelscene worker [--queues generate,train] [--redis URL]`: run one queue worker."""

from __future__ import annotations

import argparse

from pixelscene.errors import PixelsceneError

HELP = "run a queue worker"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queues",
        default="generate,train",
        help="queues in order of priority (default: %(default)s)",
    )
    parser.add_argument("--redis", metavar="URL", help="Redis URL (default: PIXELSCENE_REDIS_URL)")
    parser.add_argument("--objects-dir", help="object directory (default: PIXELSCENE_OBJECTS_DIR)")
    parser.add_argument("--name", help="worker name (default: host.pid.random)")
    parser.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    parser.add_argument("--max-jobs", type=int, help="quit after this many jobs")


def run(args: argparse.Namespace) -> int:
    from workers.jobstore.queues import QUEUES
    from workers.settings import Settings
    from workers.worker import run_worker

    overrides = {}
    if args.redis:
        overrides["redis_url"] = args.redis
    if args.objects_dir:
        overrides["objects_dir"] = args.objects_dir
    settings = Settings.load(overrides)
    from workers.webhooks import check_tls

    check_tls(settings)  # a bad PIXELSCENE_WEBHOOK_CA_FILE stops the worker here
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if not queues or unknown:
        raise PixelsceneError(f"--queues: unknown queue(s) {unknown}; choose from {list(QUEUES)}")
    from pixelscene.sampling import resolve_engine, warm_up
    from workers.settings import SettingsError

    try:
        engine = resolve_engine(settings.engine)
    except PixelsceneError as e:  # a bad PIXELSCENE_ENGINE stops the worker here
        raise SettingsError(f"PIXELSCENE_ENGINE: {e}") from None
    # the cpu engine checks PIXELSCENE_SAMPLER_THREADS and compiles its step before the
    # first job waits for it
    warm_up(engine)
    run_worker(settings, queues, name=args.name, burst=args.burst, max_jobs=args.max_jobs)
    return 0
