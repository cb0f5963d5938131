"""The API's settings: the shared `JobSettings`, plus its keys, roles and limits.

Defaults, then `PIXELSCENE_*` environment variables, then overrides (see
`workers.jobstore.settings`, which also holds what the workers read).

Keys come in three roles (`service.auth`): `PIXELSCENE_API_KEYS` are generate keys (queue
generations, read and cancel their own jobs), `PIXELSCENE_ADMIN_KEYS` admin keys (also
trainings, worker details and every key's jobs) and `PIXELSCENE_WORKER_KEYS` worker keys
(only hand a running job's result files to the API, `service.api.internal`). An entry is a key or `sha256:<hex>`, the
SHA-256 of one, so an environment file need not hold keys at all; after loading, both lists
hold only `sha256:<hex>` entries, whatever was given.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from service.ratelimit import Limit, parse_limit
from workers.jobstore.settings import ENV_PREFIX, JobSettings, SettingsError, require_positive

HASH_PREFIX = "sha256:"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def key_hash(key: str) -> str:
    """`sha256:<hex>` of an API key, as settings hold it."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


@dataclass
class ServiceSettings(JobSettings):
    api_keys: list[str] = field(default_factory=list)  # generate role
    admin_keys: list[str] = field(default_factory=list)
    worker_keys: list[str] = field(default_factory=list)  # workers without the object directory
    # Token buckets per key, by role (`service.ratelimit`): "10/s burst 20", "600/min", "off".
    # Without keys (localhost only) nothing is limited.
    rate_limit_generate: str = "20/s burst 100"
    rate_limit_admin: str = "off"
    rate_limit_worker: str = "off"
    max_queue: int = 200  # queued generate jobs above which POST answers 429
    max_content_length: int = 64 * 1024
    idempotency_ttl: int = 86400
    max_object_bytes: int = 32 * 2**20  # one result file a worker uploads
    max_model_bytes: int = 4 * 2**30  # one file of a trained model a worker uploads

    def validate(self) -> None:
        super().validate()
        require_positive(self, "max_queue", "max_object_bytes", "max_model_bytes")
        self.api_keys = _hashed(self.api_keys, "API_KEYS")
        self.admin_keys = _hashed(self.admin_keys, "ADMIN_KEYS")
        self.worker_keys = _hashed(self.worker_keys, "WORKER_KEYS")
        for role in ("generate", "admin", "worker"):
            self.rate_limit(role)

    @property
    def keys_configured(self) -> bool:
        """Whether callers need a key (else the API serves localhost only)."""
        return bool(self.api_keys or self.admin_keys or self.worker_keys)

    def rate_limit(self, role: str) -> Limit | None:
        """The token bucket each key of `role` gets (None: unlimited)."""
        name = f"rate_limit_{role}"
        try:
            return parse_limit(getattr(self, name))
        except ValueError as e:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}: {e}") from None

    def __repr__(self) -> str:
        # The key lists hold hashes only, yet a settings dump in a log needs neither them nor
        # the webhook secret.
        hidden = ("api_keys", "admin_keys", "worker_keys", "webhook_secret")
        shown = [f"{k}={v!r}" for k, v in vars(self).items() if k not in hidden]
        counts = ", ".join(f"{k}=<{len(getattr(self, k))}>" for k in hidden[:3])
        return f"ServiceSettings({counts}, {', '.join(shown)})"


def _hashed(entries: list[str], name: str) -> list[str]:
    """Each key as `sha256:<hex>`; an entry already in that form is checked, never echoed."""
    out = []
    for i, entry in enumerate(entries, 1):
        if entry.startswith(HASH_PREFIX):
            digest = entry[len(HASH_PREFIX) :].lower()
            if not _HEX64.match(digest):
                raise SettingsError(
                    f"{ENV_PREFIX}{name}: entry {i} starts with {HASH_PREFIX} but is not "
                    "followed by 64 hex digits (the SHA-256 of a key)"
                )
            out.append(HASH_PREFIX + digest)
        elif entry:
            out.append(key_hash(entry))
    return out
