"""Webhook deliveries as the job store holds them: queueing one, and where one may go.

A delivery waits in the sorted set `Keys.webhooks` (score: when due) until a worker's
dispatcher sends it (`workers.webhooks`). The API queues one when it cancels a queued job and
checks a webhook URL's IP literal at submission; the worker checks every address a name
resolves to when it sends.

Where a webhook may go (`address_refusal`):

- never to link-local, multicast or unspecified addresses, nor to a cloud metadata service
  (`METADATA`), whatever the settings say;
- to a private, loopback or otherwise non-global address only inside a network the operator
  lists in `PIXELSCENE_WEBHOOK_PRIVATE_NETWORKS` (none by default: the API and the farm's
  own machines are private addresses too);
- never through an IPv6 form that carries an IPv4 address (NAT64, 6to4, Teredo,
  IPv4-compatible or -translated) unless its network is listed, and then only when the
  IPv4 address inside may be reached itself. IPv4-mapped addresses (`::ffff:a.b.c.d`) are
  how dual-stack sockets spell IPv4, so they are judged as that IPv4 address.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import redis

from workers.jobstore.records import Keys

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SETTING = "PIXELSCENE_WEBHOOK_PRIVATE_NETWORKS"

# Metadata services that are not link-local: AWS's IPv6 endpoint (in fd00::/8, a private
# range an operator may well list), Alibaba Cloud's (in 100.64.0.0/10, which Tailscale and
# carrier NAT use) and Azure's WireServer (a public address). 169.254.169.254 and
# 169.254.170.2 are link-local and refused as such.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
# What `private` in the setting means (as did its old value `1`): RFC 1918, loopback, ULA.
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "fc00::/7", "::1/128")
_ON, _OFF = ("1", "true", "yes", "on", "private"), ("0", "false", "no", "off", "none", "")

_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def schedule(
    r: redis.Redis, keys: Keys, job_id: str, url: str, attempt: int = 0, delay: float = 0.0
) -> None:
    """Queue a delivery of the job's current JSON to `url`."""
    item = json.dumps({"id": uuid.uuid4().hex, "job_id": job_id, "url": url, "attempt": attempt})
    r.zadd(keys.webhooks, {item: time.time() + delay})


def normalize_networks(entries: Iterable[str] | bool) -> list[str]:
    """The setting's entries in canonical form: CIDR networks, and `private` for `PRIVATE`.

    Accepts the old boolean values too (`1`/`true` = `private`, `0`/`false` = none); raises
    ValueError naming an entry that is neither.
    """
    if isinstance(entries, bool):
        entries = ["private"] if entries else []
    out: list[str] = []
    for entry in entries:
        word = str(entry).strip().lower()
        if word in _ON:
            word = "private"
        elif word in _OFF:
            continue
        else:
            try:
                word = str(ipaddress.ip_network(word, strict=False))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not a network (such as 10.0.0.0/8 or fd12::/48), "
                    "'private' or 'none'"
                ) from None
        if word not in out:
            out.append(word)
    return out


def allowed_networks(entries: Iterable[str]) -> list[IPNetwork]:
    """The networks the setting's (normalized) entries name."""
    nets: list[IPNetwork] = []
    for entry in entries:
        for cidr in PRIVATE if entry == "private" else (entry,):
            nets.append(ipaddress.ip_network(cidr, strict=False))
    return nets


def _listed(ip: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in allowed)


def _embedded(ip: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]] | None:
    """(form, the IPv4 addresses inside) for the IPv6 forms that carry IPv4 to somewhere."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_COMPATIBLE:
        return "an IPv4-compatible address", [low32]
    if ip in _IPV4_TRANSLATED:
        return "an IPv4-translated address", [low32]
    if any(ip in net for net in _NAT64):
        return "a NAT64 address", [low32]
    if ip.sixtofour is not None:
        return "a 6to4 address", [ip.sixtofour]
    if ip.teredo is not None:
        return "a Teredo address", list(ip.teredo)
    return None


def address_refusal(ip: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why a webhook may not go to `ip` (a sentence naming it), or None; see the module doc."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return f"{ip} is a link-local (cloud metadata), multicast or unspecified address"
    if ip in METADATA:
        return f"{ip} is a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address) and not ip.is_loopback:
        embedded = _embedded(ip)
        if embedded is not None:
            form, inner = embedded
            if not _listed(ip, allowed):
                return (
                    f"{ip} is {form} for {', '.join(map(str, inner))}; such tunnelled "
                    f"addresses are refused unless {SETTING} lists them"
                )
            for v4 in inner:
                why = address_refusal(v4, allowed)
                if why:
                    return f"{ip} is {form}, and {why}"
            return None
    if not ip.is_global and not _listed(ip, allowed):
        return (
            f"{ip} is a private, loopback or reserved address (allowed only inside the "
            f"networks {SETTING} lists)"
        )
    return None


class Target(NamedTuple):
    """Where a webhook would go: the address to connect to, or why it may not go there."""

    address: str | None
    refused: str | None


def check_address(url: str, allowed: Iterable[str] = ()) -> Target:
    """Target(address to connect to, None), or Target(None, why the worker will not POST).

    Every address the host resolves to is checked (`address_refusal`, with the networks of
    `allowed`, the setting's normalized entries). The send then connects to the checked
    address itself, so a DNS answer that changes in between cannot redirect it. A host that
    does not resolve gives Target(None, None): the send fails and is retried.
    """
    nets = allowed_networks(allowed)
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):
        return Target(None, None)
    for info in infos:
        why = address_refusal(ipaddress.ip_address(str(info[4][0]).split("%")[0]), nets)
        if why:
            return Target(None, why if _literal(host) is not None else f"{host}: {why}")
    return Target(str(infos[0][4][0]) if infos else None, None)


def refused_address(url: str, allowed: Iterable[str] = ()) -> str | None:
    """Why the worker will not POST to `url`, or None (see `check_address`)."""
    return check_address(url, allowed).refused


def _literal(host: str) -> IPAddress | None:
    """The address a host names without a DNS lookup: an IP literal, or one of the old
    numeric IPv4 spellings resolvers still take (`2852039166`, `0xa9.0376.43518`)."""
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def refused_literal(url: str, allowed: Iterable[str] = ()) -> str | None:
    """Why a URL whose host is an IP literal is refused, else None: the API checks these at
    submission without a DNS lookup; names are checked when the worker sends."""
    ip = _literal(urllib.parse.urlsplit(url).hostname or "")
    return None if ip is None else address_refusal(ip, allowed_networks(allowed))
