"""API keys: `Authorization: Bearer <key>` checked before every request but the public ones."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from flask import request

from service import errors
from service.state import state

# Paths open without a key: load balancers and docs readers carry none.
PUBLIC_PATHS = ("/v1/health", "/openapi.json")


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
