"""The per-process model registry: loaded `PixelScene` objects in a small LRU keyed by version.

A worker loads a model once and reuses it for every job that names it. The key is the model
version (a content hash of the folder), so replacing a model folder's weights loads the new
ones on the next job instead of serving the stale copy. Names beyond the configured models
(a trained version, `name@3`) go to the registry's `resolver`, which finds their folder (and
may fetch it): a version trained after the worker started loads on its first job, and
evicts the least recently used model like any other.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from pixelscene.errors import ModelLoadError

log = logging.getLogger(__name__)

Loader = Callable[[Path | None], Any]
# Told of each load: (model name, version, seconds it took).
LoadListener = Callable[[str, str, float], None]


def _default_loader(model_dir: Path | None, engine: str = "auto") -> Any:
    from pixelscene.pipeline import PixelScene

    return PixelScene.load(model_dir, engine=engine)


def import_loader(spec: str, engine: str = "auto") -> Loader:
    """A loader from "module:function"; "" = PixelScene.load with this sampling engine."""
    if not spec:
        return partial(_default_loader, engine=engine)
    module_name, _, attr = spec.partition(":")
    import importlib

    return getattr(importlib.import_module(module_name), attr or "load")


def _default_versioner(model_dir: Path | None) -> str:
    from pixelscene.model_io import model_version, resolve_model_dir

    return model_version(resolve_model_dir(model_dir))


class ModelRegistry:
    """Model name -> loaded pipeline, at most `capacity` kept (least recently used goes)."""

    def __init__(
        self,
        models: Mapping[str, str],
        capacity: int = 2,
        loader: Loader | None = None,
        versioner: Callable[[Path | None], str] | None = None,
        resolver: Callable[[str], Path] | None = None,
    ) -> None:
        self.models = dict(models)
        self.resolver = resolver
        self.capacity = max(1, capacity)
        self.loader = loader or _default_loader
        self.versioner = versioner or getattr(self.loader, "version_of", None) or _default_versioner
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._versions: dict[tuple[str, float], str] = {}
        self._lock = threading.Lock()
        self.loads = 0
        self.on_load: LoadListener | None = None

    def model_dir(self, name: str) -> Path | None:
        """The folder of a model name (None: the bundled model)."""
        if name not in self.models:
            if self.resolver is None:
                raise ModelLoadError(f"model {name!r} is not configured on this worker")
            return self.resolver(name)
        folder = self.models[name]
        return Path(folder) if folder else None

    def version(self, name: str) -> str:
        """The content version of a model folder, recomputed only when its files change."""
        folder = self.model_dir(name)
        stamp = _folder_stamp(folder)
        key = (name, stamp)
        if key not in self._versions:
            if len(self._versions) >= 256:  # stale stamps of changed folders: forget them
                self._versions.clear()
            self._versions[key] = self.versioner(folder)
        return self._versions[key]

    def get(self, name: str) -> Any:
        """The loaded pipeline for a model name, loading it (and evicting the LRU) if needed."""
        with self._lock:
            version = self.version(name)
            if version in self._loaded:
                self._loaded.move_to_end(version)
                return self._loaded[version]
            log.info("loading model %s (%s)", name, version)
            t0 = time.perf_counter()
            model = self.loader(self.model_dir(name))
            self.loads += 1
            if self.on_load is not None:
                self.on_load(name, version, time.perf_counter() - t0)
            self._loaded[version] = model
            while len(self._loaded) > self.capacity:
                evicted, _ = self._loaded.popitem(last=False)
                log.info("unloading model %s", evicted)
            return model

    def loaded_versions(self) -> list[str]:
        return list(self._loaded)


def _folder_stamp(folder: Path | None) -> float:
    if folder is None:
        return 0.0
    try:
        return (
            max((f.stat().st_mtime for f in folder.iterdir()), default=0.0)
            + os.stat(folder).st_mtime
        )
    except OSError:
        return 0.0
