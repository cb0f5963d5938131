"""Who is calling: API keys (`Authorization: Bearer <key>`), their roles, and rate limits.

A key has a role: `generate` (queue generations; read, download and cancel the jobs it
created), `admin` (everything, every key's jobs included) or `worker` (nothing but hand a
running job's result files to the API, under `/v1/internal/`, and fetch a model version's
files). `before_request` identifies
the caller once (`check_api_key`); views that need more than `generate` say so with
`@requires("admin")`. Without configured keys the API serves localhost only and treats the
local caller as admin, with no rate limit.

Keys live in the settings as SHA-256 hashes (`service.settings`); a caller's id, the owner
of the jobs it creates, is the first 16 hex digits of its key's hash, never the key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import g, request

from service import errors, ratelimit
from service.state import state

# Paths open without a key: load balancers and docs readers carry none, nor does a browser
# loading the artists' page (service.page), whose script then sends the key itself.
PUBLIC_PATHS = ("/v1/health", "/openapi.json", "/")
PUBLIC_PREFIXES = ("/ui/",)  # the page's script, styles and icon
ROLES = ("generate", "admin")  # each may do what those before it may
WORKER = "worker"  # beside ROLES: only /v1/internal/ and model reads, as admins may too
INTERNAL_PREFIX = "/v1/internal/"
WORKER_READS = re.compile(r"/v1/models/[^/]+/[^/]+(?:/files/[^/]+)?")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Caller:
    id: str  # 16 hex digits of the key's SHA-256, or "local" without keys
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may(self, role: str) -> bool:
        """Whether this caller has `role` or one above it."""
        if WORKER in (self.role, role):
            return self.role in (role, "admin")
        return ROLES.index(self.role) >= ROLES.index(role)


LOCAL = Caller("local", "admin")


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return address == "localhost"


def bearer_token() -> str:
    """The token of `Authorization: Bearer <token>` ("" if none); the scheme in any case."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def identify() -> Caller | None:
    """The caller of this request, or None (no key, a wrong key, or not localhost without
    keys). Compares the token's hash with every configured one, in constant time in which
    matched."""
    settings = state().settings
    if not settings.keys_configured:
        return LOCAL if is_loopback(request.remote_addr) else None
    token = bearer_token()
    if not token:
        return None
    digest = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    admin = generate = worker = False
    for key in settings.admin_keys:  # no early exit in any loop
        admin |= hmac.compare_digest(digest, key)
    for key in settings.api_keys:
        generate |= hmac.compare_digest(digest, key)
    for key in settings.worker_keys:
        worker |= hmac.compare_digest(digest, key)
    if not (admin or generate or worker):
        return None
    return Caller(digest[7:23], "admin" if admin else "generate" if generate else WORKER)


def check_api_key() -> None:
    """Identify the caller (`current_caller`); 401 without a valid key except on public
    paths, 403 for a worker key outside `/v1/internal/`, 429 when the key's token bucket is
    empty."""
    caller = g.caller = identify()
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return
    if caller is None:
        if not state().settings.keys_configured:
            raise errors.ApiError(
                401, "unauthorized",
                "this server has no API keys configured and serves localhost only",
            )  # fmt: skip
        raise errors.ApiError(
            401, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    if caller.role == WORKER and not _worker_path():
        raise errors.ApiError(
            403, "forbidden",
            "a worker key may only hand results and models to the API and fetch datasets and "
            "model versions",
            details={"required_role": "generate"},
        )  # fmt: skip
    if caller is not LOCAL:
        _take_token(caller)


def _worker_path() -> bool:
    """Where a worker key may go: `/v1/internal/`, and reading a model version's files (a
    worker without the object directory fetches a version it has not got)."""
    if request.path.startswith(INTERNAL_PREFIX):
        return True
    return request.method in ("GET", "HEAD") and bool(WORKER_READS.fullmatch(request.path))


def _take_token(caller: Caller) -> None:
    st = state()
    limit = st.settings.rate_limit(caller.role)
    if limit is None:
        return
    wait = ratelimit.take(st.redis, st.keys.rate(caller.id), limit)
    if wait > 0:
        raise errors.ApiError(
            429, "rate_limited",
            f"too many requests for this key (the {caller.role} role may make {limit.rate:g} "
            f"a second, {limit.burst} at once); retry after Retry-After seconds",
            details={"role": caller.role, "rate_per_second": limit.rate, "burst": limit.burst},
            headers={"Retry-After": ratelimit.retry_after(wait)},
        )  # fmt: skip


def current_caller() -> Caller | None:
    """The caller `check_api_key` found (None on a public path without a valid key)."""
    return g.get("caller")


def authenticated() -> Caller:
    """The caller of a request `check_api_key` let through (so not on a public path)."""
    caller = current_caller()
    if caller is None:
        raise RuntimeError("no caller: a public path, or a request check_api_key did not see")
    return caller


def requires(role: str) -> Callable[[F], F]:
    """A view decorator: 403, naming the role, for callers without `role`."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            caller = current_caller()
            if caller is None or not caller.may(role):
                raise errors.ApiError(
                    403, "forbidden", f"this needs an API key with the {role} role",
                    details={"required_role": role},
                )  # fmt: skip
            return view(*args, **kwargs)

        wrapped.required_role = role  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorate


def can_see(rec: dict[str, Any]) -> bool:
    """Whether the caller may see a job record: its owner, or an admin."""
    caller = current_caller()
    return caller is not None and (caller.is_admin or rec.get("owner") == caller.id)


def client_scope() -> str:
    """Who is calling, for scoping idempotency keys and owning jobs: the caller's id.

    The key alone, never the header's spelling: `bearer k` and `Bearer  k` are one client.
    """
    return authenticated().id
