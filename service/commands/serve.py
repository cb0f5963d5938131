"""`pixelscene serve`: the REST API under waitress (`--dev`: Flask's reloading dev server)."""

from __future__ import annotations

import argparse
import logging

HELP = "run the REST API"
log = logging.getLogger("service")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--redis", metavar="URL", help="Redis URL (default: PIXELSCENE_REDIS_URL)")
    parser.add_argument("--objects-dir", help="object directory (default: PIXELSCENE_OBJECTS_DIR)")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads (default: 8)")
    parser.add_argument("--dev", action="store_true", help="Flask's development server")


def run(args: argparse.Namespace) -> int:
    from pixelscene.errors import PixelsceneError
    from service import create_app
    from service.auth import is_loopback

    overrides = {}
    if args.redis:
        overrides["redis_url"] = args.redis
    if args.objects_dir:
        overrides["objects_dir"] = args.objects_dir
    app = create_app(overrides)
    settings = app.extensions["pixelscene"].settings
    if not settings.keys_configured and not is_loopback(args.host):
        raise PixelsceneError(
            f"refusing to serve on {args.host} without API keys: set PIXELSCENE_API_KEYS "
            "(and PIXELSCENE_ADMIN_KEYS) or bind to 127.0.0.1"
        )
    log.info("serving the API on http://%s:%d (Redis %s)", args.host, args.port, settings.redis_url)
    if args.dev:
        app.run(host=args.host, port=args.port, debug=False, threaded=True)
        return 0
    import waitress

    # Waitress refuses bodies over its own limit (1 GiB) before the app sees them, without
    # saying why: leave the limits to the app (dataset uploads and, above all, 64 KiB).
    body_limit = max(settings.max_content_length, settings.dataset_max_bytes) + (1 << 20)
    waitress.serve(
        app, host=args.host, port=args.port, threads=args.threads, ident="pixelscene",
        max_request_body_size=body_limit,
    )  # fmt: skip
    return 0
