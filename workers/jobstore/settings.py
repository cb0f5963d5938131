"""Settings the API and the workers share: defaults, then `PIXELSCENE_*` variables, then overrides.

A farm is configured once (an environment file per machine): each process reads the
variables of its own settings class, a subclass of `JobSettings` (the API's in
`service.settings`, the workers' in `workers.settings`). Every field maps to
`PIXELSCENE_<FIELD IN CAPITALS>`:

    PIXELSCENE_REDIS_URL=redis://10.0.0.5:6379/0
    PIXELSCENE_MODELS=tiny=,base=/srv/models/base      name=folder ("" = the bundled model)
    PIXELSCENE_API_KEYS=key1,key2
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from pixelscene.errors import PixelsceneError
from workers.jobstore.hooks import normalize_networks

ENV_PREFIX = "PIXELSCENE_"


class SettingsError(PixelsceneError):
    """A setting has the wrong type or value; the message names the variable."""


@dataclass
class JobSettings:
    """Where jobs live and how long: what enqueueing, reading and running a job all need."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    objects_dir: str = "objects"
    # Model name -> model folder; "" means the model bundled with the package.
    models: dict[str, str] = field(default_factory=lambda: {"tiny": ""})
    default_model: str = "tiny"
    # Palette name -> .gpl/.pal/.hex file on the workers; clients pick palettes by name only.
    palettes: dict[str, str] = field(default_factory=dict)
    # Training preset name -> YAML file (read by the workers, and by the API where it can),
    # beside configs/*.yaml: a studio's own architectures and schedules.
    presets: dict[str, str] = field(default_factory=dict)
    job_timeout: int = 900
    train_timeout: int = 2 * 86400
    result_ttl: int = 7 * 86400
    failure_ttl: int = 7 * 86400
    max_retries: int = 2  # re-runs of a job whose worker died
    webhook_secret: str = ""  # "" = webhooks off (the API refuses them)
    # Networks of private, loopback or other non-global addresses webhooks may go to (a
    # studio's own machines): CIDRs, or `private` for RFC 1918, loopback and ULA; none by
    # default. Link-local, multicast, unspecified and cloud metadata addresses are always
    # refused (workers.jobstore.hooks says what else).
    webhook_private_networks: list[str] = field(default_factory=list)
    key_prefix: str = "pixelscene"
    # An uploaded dataset (`POST /v1/datasets`): the most bytes of its archive and, apart,
    # of its unpacked files, and the most members its archive may hold. A worker fetching a
    # dataset from the API unpacks it under the same limits.
    dataset_max_bytes: int = 1 << 30
    dataset_max_members: int = 100_000

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Self:
        """Defaults, then `PIXELSCENE_*` variables, then `overrides` (keys in any case; keys
        that name no field of this class are ignored)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in fields.items():
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = _parse(ENV_PREFIX + name.upper(), raw, f.type)
        for key, value in (overrides or {}).items():
            name = key.lower()
            if name in fields:
                values[name] = (
                    _parse(key, value, fields[name].type) if isinstance(value, str) else value
                )
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.default_model not in self.models:
            raise SettingsError(
                f"{ENV_PREFIX}DEFAULT_MODEL={self.default_model!r} is not one of "
                f"{ENV_PREFIX}MODELS ({', '.join(self.models) or 'none'})"
            )
        require_positive(
            self, "job_timeout", "result_ttl", "failure_ttl", "dataset_max_bytes",
            "dataset_max_members",
        )  # fmt: skip
        if self.max_retries < 0:
            raise SettingsError(f"{ENV_PREFIX}MAX_RETRIES must be >= 0")
        try:
            self.webhook_private_networks = normalize_networks(self.webhook_private_networks)
        except ValueError as e:
            raise SettingsError(f"{ENV_PREFIX}WEBHOOK_PRIVATE_NETWORKS: {e}") from None


def require_positive(settings: Any, *names: str) -> None:
    for name in names:
        if getattr(settings, name) <= 0:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be > 0")


def _parse(name: str, raw: str, type_name: Any) -> Any:
    type_name = str(type_name)
    try:
        if type_name == "bool":
            value = raw.strip().lower()
            if value in ("1", "true", "yes", "on"):
                return True
            if value in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name.startswith("list"):
            return [item.strip() for item in raw.split(",") if item.strip()]
        if type_name.startswith("dict"):
            pairs = [item for item in raw.split(",") if item.strip()]
            out = {}
            for pair in pairs:
                key, sep, value = pair.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"expected name=value, got {pair!r}")
                out[key.strip()] = value.strip()
            return out
    except ValueError as e:
        raise SettingsError(f"{name}={raw!r}: {e}") from None
    return raw
