"""Webhooks: when a job ends, POST its JSON to the job's URL, signed, retried with backoff.

Deliveries wait in a Redis sorted set (score: when due; queued by `workers.jobstore.hooks`),
so ending a job costs one ZADD and never blocks the worker; a daemon thread in each worker
process sends them. A failed send is re-scheduled `backoff * 2**attempt` seconds later, up
to `webhook_max_attempts` tries.

A dispatcher claims a due delivery with a lease (SET NX EX on a claim key) and removes it
from the set only once it has been sent, re-scheduled or given up. A worker that dies
mid-send leaves the delivery in the set, and another dispatcher sends it when the lease
runs out: delivery is at least once. Each POST carries the delivery's id in
`X-Pixelscene-Delivery` (the same on such a resend), so receivers can drop duplicates.

Signature (verify with `verify_signature`): header
    X-Pixelscene-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
Receivers should reject timestamps more than a few minutes old (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any

import redis

from workers.jobstore import metrics
from workers.jobstore.hooks import check_address, schedule
from workers.jobstore.records import Keys, get_job
from workers.jobstore.views import job_view
from workers.settings import Settings, SettingsError

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Pixelscene-Signature"
DELIVERY_HEADER = "X-Pixelscene-Delivery"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(secret: str, body: bytes, header: str, tolerance: float = 300.0) -> bool:
    """Check a signature header against the body; False if wrong or older than `tolerance` s."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to a given address; Host header from the URL."""

    def __init__(self, host: str, port: int | None, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a given address; SNI and certificate checked against the URL's host."""

    def __init__(
        self, host: str, port: int | None, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Certificate and host name checks against the system's CAs and `webhook_ca_file`."""
    context = ssl.create_default_context()
    if settings.webhook_ca_file:
        context.load_verify_locations(settings.webhook_ca_file)
    return context


def check_tls(settings: Settings) -> None:
    """A worker's check at start: `webhook_ca_file` must be a readable PEM file of
    certificates (else every HTTPS delivery would fail)."""
    try:
        tls_context(settings)
    except (OSError, ValueError) as e:
        raise SettingsError(
            f"PIXELSCENE_WEBHOOK_CA_FILE={settings.webhook_ca_file!r}: not a readable PEM file "
            f"of certificates ({e})"
        ) from None


def claim_lease(settings: Settings) -> int:
    """Seconds a claimed delivery is held before another dispatcher may take it over."""
    return int(max(30.0, 4 * settings.webhook_timeout))


def deliver(
    settings: Settings,
    url: str,
    payload: dict[str, Any],
    delivery_id: str = "",
    address: str | None = None,
) -> tuple[bool, str]:
    """POST once (to `address` when given, else to what the host resolves to); returns
    (delivered, what happened). Redirects are not followed."""
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "pixelscene-webhook/1",
        SIGNATURE_HEADER: sign(settings.webhook_secret, body, int(time.time())),
    }
    if delivery_id:
        headers[DELIVERY_HEADER] = delivery_id
    parts = urllib.parse.urlsplit(url)
    host, timeout = parts.hostname or "", settings.webhook_timeout
    https = parts.scheme == "https"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = None
    try:
        if address is not None and https:
            conn = _PinnedHTTPS(host, parts.port, address, timeout, tls_context(settings))
        elif address is not None:
            conn = _PinnedHTTP(host, parts.port, address, timeout)
        elif https:
            conn = http.client.HTTPSConnection(
                host, parts.port, timeout=timeout, context=tls_context(settings)
            )
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        conn.request("POST", path, body=body, headers=headers)
        status = conn.getresponse().status
        return 200 <= status < 300, f"HTTP {status}"
    except (OSError, http.client.HTTPException) as e:
        return False, str(e) or type(e).__name__
    finally:
        if conn is not None:
            conn.close()


def process_due(r: redis.Redis, settings: Settings, limit: int = 16) -> int:
    """Send the deliveries that are due; returns how many were attempted."""
    keys = Keys(settings.key_prefix)
    due = r.zrangebyscore(keys.webhooks, "-inf", time.time(), start=0, num=limit)
    attempted = 0
    for raw in due:
        item = json.loads(raw)
        if not r.set(keys.webhook_claim(item["id"]), "1", nx=True, ex=claim_lease(settings)):
            continue  # another dispatcher holds it (or sent it and is removing it)
        attempted += 1
        rec = get_job(r, keys, item["job_id"])
        if rec is None:  # the job expired: nothing left to report
            r.zrem(keys.webhooks, raw)
            continue
        attempt = item["attempt"] + 1
        job_key = keys.job(item["job_id"])
        address, refused = check_address(item["url"], settings.webhook_private_networks)
        if refused:
            log.warning("webhook for %s refused: %s", item["job_id"], refused)
            r.hset(job_key, mapping={"webhook": f"refused ({refused})"})
            metrics.count(r, keys.metrics, metrics.WEBHOOKS, outcome="refused")
            r.zrem(keys.webhooks, raw)
            continue
        payload = job_view(rec, settings.public_url)
        ok, what = deliver(settings, item["url"], payload, item["id"], address)
        if ok:
            outcome = "delivered"
            r.hset(job_key, mapping={"webhook": f"delivered ({what}, attempt {attempt})"})
        elif attempt < settings.webhook_max_attempts:
            outcome = "retried"
            delay = settings.webhook_backoff * 2 ** (attempt - 1)
            log.info("webhook for %s failed (%s); retry in %.1fs", item["job_id"], what, delay)
            r.hset(job_key, mapping={"webhook": f"retrying ({what}, attempt {attempt})"})
            schedule(r, keys, item["job_id"], item["url"], attempt, delay)
        else:
            outcome = "failed"
            log.warning(
                "webhook for %s failed %d times (%s); giving up", item["job_id"], attempt, what
            )
            r.hset(job_key, mapping={"webhook": f"failed ({what}, {attempt} attempts)"})
        metrics.count(r, keys.metrics, metrics.WEBHOOKS, outcome=outcome)
        r.zrem(keys.webhooks, raw)  # only now: a crash before this line leads to a resend
    return attempted


class WebhookDispatcher(threading.Thread):
    """Daemon thread that sends due webhooks until `stop()`."""

    def __init__(self, r: redis.Redis, settings: Settings, poll: float = 0.2) -> None:
        super().__init__(name="pixelscene-webhooks", daemon=True)
        self.r, self.settings, self.poll = r, settings, poll
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                process_due(self.r, self.settings)
            except redis.RedisError as e:
                log.warning("webhook dispatcher: %s", e)
            except Exception:
                log.exception("webhook dispatcher error")
            self._stop_event.wait(self.poll)

    def stop(self) -> None:
        self._stop_event.set()
