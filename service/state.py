"""The app's state (settings, Redis connection, schemas, queues) and `state()`, its accessor.

`create_app` puts one `ServiceState` in `app.extensions`; views reach it through `state()`,
as the Flask tutorial's views reach the database through `get_db()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
from flask import current_app
from rq import Queue

from service.settings import ServiceSettings
from workers.jobstore.queues import get_queue
from workers.jobstore.records import Keys


@dataclass
class ServiceState:
    settings: ServiceSettings
    redis: redis.Redis
    keys: Keys
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Queue objects cache the server version RQ asks for on every enqueue.
    queues: dict[str, Queue] = field(default_factory=dict)

    def queue(self, name: str) -> Queue:
        if name not in self.queues:
            self.queues[name] = get_queue(name, self.redis)
        return self.queues[name]


def state() -> ServiceState:
    """The current app's state."""
    return current_app.extensions["pixelscene"]
