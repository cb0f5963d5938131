"""`pixelscene gc [--older-than DAYS]`: delete job objects past their retention."""

from __future__ import annotations

import argparse

HELP = "delete job objects past their retention"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="delete job folders untouched for this many days (default: PIXELSCENE_RETENTION_DAYS)",
    )
    parser.add_argument("--objects-dir", help="object directory (default: PIXELSCENE_OBJECTS_DIR)")
    parser.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")


def run(args: argparse.Namespace) -> int:
    from pixelscene.errors import PixelsceneError
    from workers.jobstore.objects import collect_garbage
    from workers.settings import Settings

    settings = Settings.load({"objects_dir": args.objects_dir} if args.objects_dir else None)
    days = settings.retention_days if args.older_than is None else args.older_than
    if days < 0:
        raise PixelsceneError("--older-than must be >= 0")
    removed = collect_garbage(settings.objects_dir, days, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(removed)} job folder(s) older than {days:g} days in {settings.objects_dir}")
    return 0
