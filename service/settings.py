"""The API's settings: the shared `JobSettings`, plus its keys and limits.

Defaults, then `PIXELSCENE_*` environment variables, then overrides (see
`workers.jobstore.settings`, which also holds what the workers read).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.jobstore.settings import JobSettings, require_positive


@dataclass
class ServiceSettings(JobSettings):
    api_keys: list[str] = field(default_factory=list)
    max_queue: int = 200  # queued generate jobs above which POST answers 429
    max_content_length: int = 64 * 1024
    idempotency_ttl: int = 86400

    def validate(self) -> None:
        super().validate()
        require_positive(self, "max_queue")
