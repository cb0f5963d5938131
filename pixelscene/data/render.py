"""Vectorised drawing of one VGA-style 320x200 scene into a small per-scene palette.

The canvas holds palette indices; every colour goes through `Palette.add`, which snaps it to
the 6-bit DAC, so the final image uses 16-48 DAC colours with hard edges and no blending.
`render_scene` paints back to front in stages (sky, sun/moon/stars, clouds, silhouettes,
water, foreground, landmark, vegetation, weather), each drawing from the scene's one random
generator in a fixed order, so a (seed, attributes) pair always gives the same image.
"""

from __future__ import annotations

import numpy as np

from pixelscene.data.canvas import H, W, fit_colors
from pixelscene.data.render_land import (
    draw_foreground,
    draw_landmark,
    draw_silhouettes,
    draw_vegetation,
    draw_water,
)
from pixelscene.data.render_sky import (
    draw_clouds,
    draw_sky,
    draw_stars,
    draw_sun_and_moon,
    draw_weather,
)
from pixelscene.data.scene import Scene

__all__ = ["H", "W", "render_scene"]


def render_scene(attrs: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Draw one scene. Returns (rgb uint8 (200, 320, 3), extra facts about the drawing:
    "horizon", "colors", and "sprites", an (H, W) bool mask of the pixels the landmark and
    vegetation sprites drew before the weather went on top, and "landmark", the part of it the
    landmark drew)."""
    s = Scene(attrs)
    s.hz = int(rng.integers(112, 130))
    draw_sky(s, rng)
    draw_stars(s, rng)
    draw_sun_and_moon(s, rng)
    draw_clouds(s, rng)
    draw_silhouettes(s, rng)
    if s.terrain in ("coast", "lake"):
        draw_water(s, rng)
    draw_foreground(s, rng)
    before_sprites = s.canvas.copy()
    if s.landmark != "none":
        draw_landmark(s, rng)
    landmark = s.canvas != before_sprites
    if s.veg != "none":
        draw_vegetation(s, rng)
    sprites = s.canvas != before_sprites  # the landmark's and vegetation's pixels
    draw_weather(s, rng)
    canvas = fit_colors(s.canvas, s.pal, rng, s.fg)
    rgb = s.pal.array()[canvas]
    return rgb, {
        "horizon": s.hz,
        "colors": int(len(np.unique(canvas))),
        "sprites": sprites,
        "landmark": landmark,
    }
