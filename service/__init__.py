"""The REST API: `create_app()` builds it; `pixelscene serve` runs it."""

from service.app import create_app

__all__ = ["create_app"]
