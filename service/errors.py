"""Every error leaves the API as JSON `{"error": {"code", "message", "details"}}`, never a trace."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from service.schemas import ValidationError

log = logging.getLogger("service")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error with a status, a stable code, a message and optional details and headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def handle_exception(e: Exception) -> Response:
    """The one handler: known errors keep their status, anything else is a logged 500."""
    if isinstance(e, ApiError):
        return error_response(e.status, e.code, e.message, e.details, e.headers)
    if isinstance(e, ValidationError):
        return error_response(
            400, "invalid_request", "the request has invalid fields", {"fields": e.fields}
        )
    if isinstance(e, HTTPException):
        status = e.code or 500
        headers = {}
        if status == 405 and e.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(e.valid_methods)  # type: ignore[attr-defined]
        return error_response(
            status, _HTTP_CODES.get(status, "http_error"), e.description or e.name, None, headers
        )
    if isinstance(e, redis.ConnectionError | redis.TimeoutError):
        log.warning("Redis unreachable: %s", e)
        return error_response(
            503, "redis_unavailable", "the job store is unreachable; try again shortly",
            headers={"Retry-After": "5"},
        )  # fmt: skip
    log.exception("unhandled error")
    return error_response(500, "internal_error", "internal server error")


def register(app: Flask) -> None:
    app.register_error_handler(Exception, handle_exception)
