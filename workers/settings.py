"""Worker settings: the shared `JobSettings`, plus what running jobs and sending webhooks need.

Defaults, then `PIXELSCENE_*` environment variables, then overrides (see
`workers.jobstore.settings`); the API's own settings are in `service.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # A worker that cannot see the API's object directory (a Mac mini with only the Redis URL
    # and a key): the API's base URL and a worker key (`PIXELSCENE_WORKER_KEYS` on the API).
    # Results are written under `objects_dir` here, then uploaded (`workers.results`).
    results_url: str = ""
    worker_key: str = field(default="", repr=False)
    results_upload_seconds: float = 60.0  # retrying an unreachable API this long fails the job

    def validate(self) -> None:
        super().validate()
        require_positive(self, "heartbeat_ttl", "results_upload_seconds")
        if self.results_url and not self.results_url.startswith(("http://", "https://")):
            raise SettingsError(f"{ENV_PREFIX}RESULTS_URL must start with http:// or https://")
        if self.results_url and not self.worker_key:
            raise SettingsError(f"{ENV_PREFIX}RESULTS_URL needs {ENV_PREFIX}WORKER_KEY")
        if self.webhook_max_attempts < 1:
            raise SettingsError(f"{ENV_PREFIX}WEBHOOK_MAX_ATTEMPTS must be >= 1")
