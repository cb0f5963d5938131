"""Webhook deliveries as the job store holds them: queueing one, and where one may go.

A delivery waits in the sorted set `Keys.webhooks` (score: when due) until a worker's
dispatcher sends it (`workers.webhooks`). The API queues one when it cancels a queued job and
checks a webhook URL's IP literal at submission; the worker checks every address a name
resolves to when it sends.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
import urllib.parse
import uuid

import redis

from workers.jobstore.records import Keys


def schedule(
    r: redis.Redis, keys: Keys, job_id: str, url: str, attempt: int = 0, delay: float = 0.0
) -> None:
    """Queue a delivery of the job's current JSON to `url`."""
    item = json.dumps({"id": uuid.uuid4().hex, "job_id": job_id, "url": url, "attempt": attempt})
    r.zadd(keys.webhooks, {item: time.time() + delay})


def check_address(url: str, private_ok: bool = True) -> tuple[str | None, str | None]:
    """(address to connect to, None), or (None, why the worker will not POST to `url`).

    Every address the host resolves to is checked: link-local (cloud metadata services),
    multicast and unspecified addresses are refused always, private and loopback ones when
    `private_ok` is False. The send then connects to the checked address itself, so a DNS
    answer that changes in between cannot redirect it. A host that does not resolve gives
    (None, None): the send fails and is retried.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):
        return None, None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            return None, f"{host} is {ip}, a link-local, multicast or unspecified address"
        if not private_ok and (ip.is_private or ip.is_loopback):
            return (
                None,
                f"{host} is {ip}, a private address (PIXELSCENE_WEBHOOK_PRIVATE_NETWORKS=0)",
            )
    return (str(infos[0][4][0]) if infos else None), None


def refused_address(url: str, private_ok: bool = True) -> str | None:
    """Why the worker will not POST to `url`, or None (see `check_address`)."""
    return check_address(url, private_ok)[1]


def refused_literal(url: str, private_ok: bool = True) -> str | None:
    """`refused_address` when the URL's host is an IP literal, else None: the API checks
    these at submission without a DNS lookup; names are checked when the worker sends."""
    try:
        ipaddress.ip_address(urllib.parse.urlsplit(url).hostname or "")
    except ValueError:
        return None
    return refused_address(url, private_ok)
