"""Per-key rate limits: a token bucket per API key in Redis, taken from atomically in Lua.

A limit is written `<rate>/<s|min|h> [burst <n>]` ("10/s burst 20", "600/min"), or as two
numbers, tokens per second and burst ("10 20"); `off` (or empty) means none. Without a
burst a bucket holds one second's worth of tokens (at least 1). Every request with a key
takes one token; an empty bucket answers 429 with the seconds until the next token.
"""

from __future__ import annotations

import functools
import math
import re
from typing import NamedTuple

import redis

_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}
_SPEC = re.compile(
    r"^\s*(?P<rate>\d+(?:\.\d+)?)\s*/\s*(?P<unit>[a-z]+)\s*(?:burst\s+(?P<burst>\d+))?\s*$"
)
_PAIR = re.compile(r"^\s*(?P<rate>\d+(?:\.\d+)?)[\s,]+(?P<burst>\d+)\s*$")

# KEYS[1]: the bucket (hash of tokens and when last filled). ARGV: tokens per second, burst.
# The clock is Redis's own, so API processes on several machines share one bucket exactly.
# Returns 0 when a token was taken, else the milliseconds until one will be there.
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


class Limit(NamedTuple):
    rate: float  # tokens per second
    burst: int


@functools.lru_cache(maxsize=64)
def parse_limit(text: str) -> Limit | None:
    """The limit a setting's text describes, None for `off`; ValueError if unreadable."""
    text = text.strip().lower()
    if text in ("", "off", "none", "0"):
        return None
    match = _SPEC.match(text)
    if match:
        unit = _UNITS.get(match["unit"])
        if unit is None:
            raise ValueError(f"unknown unit {match['unit']!r} (s, min or h)")
        rate = float(match["rate"]) / unit
        burst = int(match["burst"]) if match["burst"] else max(1, math.ceil(rate))
    elif match := _PAIR.match(text):
        rate, burst = float(match["rate"]), int(match["burst"])
    else:
        raise ValueError("expected e.g. '10/s burst 20', '600/min', '10 20' or 'off'")
    if rate <= 0 or burst < 1:
        raise ValueError("the rate must be > 0 and the burst >= 1")
    return Limit(rate, burst)


def take(r: redis.Redis, key: str, limit: Limit) -> float:
    """Take a token from the bucket `key`: 0.0 if there was one, else seconds to wait."""
    # EVALSHA, loading the script on a Redis that does not know it yet
    wait_ms = r.register_script(_TAKE)(keys=[key], args=[repr(limit.rate), limit.burst])
    return int(wait_ms) / 1000.0


def retry_after(wait: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))
