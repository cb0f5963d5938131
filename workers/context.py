"""What a job function needs in this process: settings, Redis, the model registry.

The worker installs one at start-up; a job run some other way (a plain `rq worker`, a test)
gets one built from the environment on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import redis

from workers.jobstore.records import Keys
from workers.registry import ModelRegistry, import_loader
from workers.settings import Settings


@dataclass
class WorkerContext:
    settings: Settings
    redis: redis.Redis
    registry: ModelRegistry
    worker_name: str = ""
    stop_requested: bool = False  # a job saw the worker asked to stop (the worker then stops)

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)


_current: WorkerContext | None = None


def install(ctx: WorkerContext) -> WorkerContext:
    global _current
    _current = ctx
    return ctx


def current() -> WorkerContext:
    """The installed context, or one from `PIXELSCENE_*` settings."""
    global _current
    if _current is None:
        settings = Settings.load()
        _current = WorkerContext(
            settings=settings,
            redis=redis.Redis.from_url(settings.redis_url),
            registry=worker_registry(settings),
        )
    return _current


def worker_registry(settings: Settings) -> ModelRegistry:
    """The registry of a worker: its configured models, and trained versions by
    `name@version` from the object directory (or fetched from the API)."""
    from workers.versions import version_folder

    return ModelRegistry(
        settings.models,
        settings.model_cache_size,
        import_loader(settings.pipeline_loader, settings.engine),
        resolver=partial(version_folder, settings),
    )
