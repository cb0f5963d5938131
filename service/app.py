"""The Flask app factory: settings, the per-app state, error handling, blueprints, API keys."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry

from service import errors
from service.auth import check_api_key
from service.schemas import generation_schema, training_schema
from service.settings import ServiceSettings
from service.state import ServiceState
from workers.jobstore.records import Keys

log = logging.getLogger("service")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API.

    Args:
        config: overrides applied after the defaults and `PIXELSCENE_*` variables; keys are
            setting names in any case (`REDIS_URL`, `api_keys`, ...), plus `REDIS` for a
            ready connection (tests pass a fakeredis one).

    Returns:
        The Flask app, with blueprints under /v1, `/openapi.json` and `/metrics`.
    """
    config = dict(config or {})
    connection = config.pop("REDIS", None)
    settings = ServiceSettings.load(config)
    if connection is None:
        # Fail fast (one quick retry) so a Redis outage is a prompt 503, not a hung request.
        connection = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 1),
        )
    app = Flask("service")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["pixelscene"] = ServiceState(
        settings=settings,
        redis=connection,
        keys=Keys(settings.key_prefix),
        schemas={
            "GenerationRequest": generation_schema(settings),
            "TrainingRequest": training_schema(settings),
        },
    )
    errors.register(app)

    # Here, not at the top: the blueprints bring in MLX (the object directory's atomic
    # writer), which `pixelscene --help` imports this module without needing.
    from service.api import datasets, generations, internal, jobs, models, system
    from service.metrics import bp as metrics_bp
    from service.openapi import bp as openapi_bp
    from service.page import bp as page_bp

    for bp in (generations.bp, jobs.bp, datasets.bp, models.bp, system.bp, internal.bp):
        app.register_blueprint(bp, url_prefix="/v1")
    app.register_blueprint(openapi_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(page_bp)
    app.before_request(check_api_key)
    if not settings.keys_configured:
        log.warning("no API keys configured: accepting requests from localhost only")
    return app
