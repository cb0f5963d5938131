"""Worker settings: the shared `JobSettings`, plus what running jobs and sending webhooks need.

Defaults, then `PIXELSCENE_*` environment variables, then overrides (see
`workers.jobstore.settings`); the API's own settings are in `service.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.jobstore.settings import ENV_PREFIX, JobSettings, SettingsError, require_positive

__all__ = ["Settings", "SettingsError"]


@dataclass
class Settings(JobSettings):
    datasets_dir: str = "data"  # training jobs name a dataset folder under here
    public_url: str = ""  # base URL for links in webhook payloads; "" = relative links
    retention_days: float = 7.0
    webhook_max_attempts: int = 5
    webhook_backoff: float = 2.0  # seconds before the first retry; doubles each time
    webhook_timeout: float = 5.0
    # PEM file of CA certificates HTTPS webhooks are checked against, in addition to the
    # system's (a studio's own CA for its internal receivers); "" = the system's only. Read
    # at the worker's start (`workers.webhooks.check_tls`).
    webhook_ca_file: str = ""
    heartbeat_ttl: int = 30  # a running job whose worker is silent this long is abandoned
    reap_interval: float = 5.0
    model_cache_size: int = 2
    # "module:function" taking a model folder (None = bundled) and returning a loaded
    # pipeline with PixelScene's interface; "" = pixelscene.pipeline.PixelScene.load.
    pipeline_loader: str = ""
    # Sampling engine the default loader loads models with: auto (cpu on MLX's CPU device,
    # mlx on a GPU), cpu or mlx.
    engine: str = "auto"
    progress_interval: float = 0.25
    batch_size: int = 8

    def validate(self) -> None:
        super().validate()
        require_positive(self, "heartbeat_ttl")
        if self.webhook_max_attempts < 1:
            raise SettingsError(f"{ENV_PREFIX}WEBHOOK_MAX_ATTEMPTS must be >= 1")
