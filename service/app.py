"""The Flask app factory and the per-app state (settings, Redis connection, schemas)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import Flask, current_app, request
from redis.backoff import NoBackoff
from redis.retry import Retry

from service import errors
from service.schemas import generation_schema, training_schema
from workers.settings import Settings
from workers.store import Keys

log = logging.getLogger("service")
# Paths open without a key: load balancers and docs readers carry none.
PUBLIC_PATHS = ("/v1/health", "/openapi.json")


@dataclass
class ServiceState:
    settings: Settings
    redis: redis.Redis
    keys: Keys
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Queue objects cache the server version RQ asks for on every enqueue.
    queues: dict[str, Any] = field(default_factory=dict)

    def queue(self, name: str) -> Any:
        if name not in self.queues:
            from workers.queues import get_queue

            self.queues[name] = get_queue(name, self.redis)
        return self.queues[name]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API.

    Args:
        config: overrides applied after the defaults and `PIXELSCENE_*` variables; keys are
            setting names in any case (`REDIS_URL`, `api_keys`, ...), plus `REDIS` for a
            ready connection (tests pass a fakeredis one).

    Returns:
        The Flask app, with blueprints under /v1 and `/openapi.json`.
    """
    config = dict(config or {})
    connection = config.pop("REDIS", None)
    settings = Settings.load(config)
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

    from service.api import generations, jobs, system
    from service.openapi import bp as openapi_bp

    for bp in (generations.bp, jobs.bp, system.bp):
        app.register_blueprint(bp, url_prefix="/v1")
    app.register_blueprint(openapi_bp)
    app.before_request(check_api_key)
    if not settings.api_keys:
        log.warning("no API keys configured: accepting requests from localhost only")
    return app


def state() -> ServiceState:
    return current_app.extensions["pixelscene"]


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return address == "localhost"


def check_api_key() -> None:
    """`Authorization: Bearer <key>` against the configured keys, in constant time.

    With no keys configured only loopback clients are served.
    """
    if request.path in PUBLIC_PATHS:
        return
    keys = state().settings.api_keys
    if not keys:
        if not is_loopback(request.remote_addr):
            raise errors.ApiError(
                401, "unauthorized",
                "this server has no API keys configured and serves localhost only",
            )  # fmt: skip
        return
    if not key_matches(keys):
        raise errors.ApiError(
            401, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip


def bearer_token() -> str:
    """The token of `Authorization: Bearer <token>` ("" if none); the scheme in any case."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def key_matches(keys: list[str]) -> bool:
    """Whether the request's bearer token is one of `keys` (constant time in which matched)."""
    supplied = bearer_token().encode()
    matched = False
    for key in keys:  # no early exit: the time taken does not depend on which key matched
        matched |= hmac.compare_digest(supplied, key.encode())
    return matched


def is_trusted() -> bool:
    """Whether this request would pass `check_api_key` on a protected path (for public paths
    that show more to callers with a key)."""
    keys = state().settings.api_keys
    return key_matches(keys) if keys else is_loopback(request.remote_addr)


def client_scope() -> str:
    """Who is calling, for scoping idempotency keys: a hash of the API key, or 'local'.

    The key alone, never the header's spelling: `bearer k` and `Bearer  k` are one client.
    """
    if not state().settings.api_keys:
        return "local"
    return hashlib.sha256(bearer_token().encode()).hexdigest()[:16]
