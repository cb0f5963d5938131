"""A stand-in for `PixelScene` with the same interface: fast, deterministic, no weights.

Unit tests inject it into the worker's model registry; integration tests use the real
pipeline with a random-weight model folder. The load benchmark can still select it with
`PIXELSCENE_PIPELINE_LOADER=service_fakes:load`; `FAKE_STEP_SECONDS` slows each step. A
prompt holding `FAKE_RAISE` makes the job raise (a bug in the pipeline, for fault tests).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROWS, COLS = 13, 20
RAISE = "FAKE_RAISE"


@dataclass
class FakeImage:
    prompt: str
    seed: int
    codes: np.ndarray
    pixels: np.ndarray


@dataclass
class FakeStep:
    done: int
    total: int
    images: list[FakeImage] | None = None


class FakePixelScene:
    name = "fake"

    def __init__(self, model_dir: Path | None = None, step_seconds: float | None = None) -> None:
        self.model_dir = model_dir
        self.version = "fake-000000000001"
        env = os.environ.get("FAKE_STEP_SECONDS", "0")
        self.step_seconds = float(env) if step_seconds is None else step_seconds
        self.calls: list[dict] = []
        self.closed = 0

    def resolve_settings(self, **given: Any) -> dict[str, Any]:
        defaults = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "cfg_scale": 3.0}
        return {k: v if given.get(k) is None else given[k] for k, v in defaults.items()}

    def iter_generate(
        self, prompts: list[str], *, n: int = 1, seed: int | None = None, batch_size: int = 8, **kw
    ) -> Iterator[FakeStep]:
        self.calls.append({"prompts": prompts, "n": n, "seed": seed, **kw})
        total = ROWS * COLS * n * len(prompts)
        if any(RAISE in p for p in prompts):
            raise ZeroDivisionError("the fake pipeline was asked to fail")
        try:
            for done in range(0, total, ROWS * COLS // 4):
                if self.step_seconds:
                    time.sleep(self.step_seconds)
                yield FakeStep(done, total)
            images = []
            for i, prompt in enumerate(prompts):
                for j in range(n):
                    s = (seed or 0) + i * n + j
                    rng = np.random.default_rng(s)
                    codes = rng.integers(0, 512, (ROWS, COLS), dtype=np.int32)
                    # Flat 16x16 tiles, like decoded pixel art (compresses like it too).
                    palette = rng.integers(0, 256, (512, 3), dtype=np.uint8)
                    tiles = palette[codes].repeat(16, axis=0).repeat(16, axis=1)
                    pixels = np.ascontiguousarray(tiles[4:204])
                    images.append(FakeImage(prompt, s, codes, pixels))
            yield FakeStep(total, total, images)
        finally:
            self.closed += 1


def load(model_dir: Path | None) -> FakePixelScene:
    return FakePixelScene(model_dir)


load.version_of = lambda model_dir: "fake-000000000001"  # type: ignore[attr-defined]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
