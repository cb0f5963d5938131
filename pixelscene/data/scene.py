"""What the renderer's stages share: a scene's attributes, palette and canvas, and facts
one stage leaves for a later one; and the time of day's light on a colour."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pixelscene.data.canvas import Palette

# Terrain light: rgb * mul + add, per time of day.
LIGHT = {
    "day": ((1.0, 1.0, 1.0), (0, 0, 0)),
    "sunset": ((0.8, 0.55, 0.55), (40, 5, 25)),
    "night": ((0.3, 0.32, 0.46), (4, 8, 30)),
    "dawn": ((0.85, 0.75, 0.82), (30, 12, 28)),
}


def lit(rgb, time: str) -> np.ndarray:
    mul, add = LIGHT[time]
    return np.asarray(rgb, dtype=np.float64) * mul + add


@dataclass
class Scene:
    """What the stages of `render_scene` share: the attributes, the palette and canvas, and
    facts one stage leaves for a later one (horizon row, silhouettes, ground profile...)."""

    attrs: dict
    pal: Palette = field(default_factory=Palette)
    canvas: np.ndarray | None = None  # (H, W) palette indices
    hz: int = 0  # horizon row
    horizon_rgb: np.ndarray | None = None  # the sky's lowest colour, for haze and water
    snow_rgb: np.ndarray | None = None
    body_x: int = 0  # the sun's or moon's column (its reflection on water)
    body_rgb: tuple | None = None
    layers: list = field(default_factory=list)  # (profile, jagged) silhouettes, far to near
    water_rows: tuple[int, int] | None = None
    fg: np.ndarray | None = None  # (W,) first row of the foreground per column
    usable: np.ndarray | None = None  # (W,) columns where sprites may stand
    span: tuple[int, int] = (-100, -100)  # the landmark's columns (vegetation keeps clear)

    def __post_init__(self) -> None:
        a = self.attrs
        self.time, self.weather, self.terrain = a["time"], a["weather"], a["terrain"]
        self.landmark, self.veg, self.cel = a["landmark"], a["vegetation"], set(a["celestial"])
        self.snow, self.fog = self.weather == "snow", self.weather == "fog"
