"""The renderer's stages above the land: the sky, stars, sun and moon, clouds, and the
weather drawn over everything last. Each draws from the scene's generator in turn."""

from __future__ import annotations

import numpy as np

from pixelscene.data.canvas import (
    BAYER,
    YY,
    H,
    W,
    disc,
    dithered_ramp,
    gradient,
    mix,
    profile,
    stamp,
)
from pixelscene.data.scene import Scene, lit

SKY_KEYS = {
    "day": [(40, 90, 200), (90, 150, 235), (175, 215, 250)],
    "sunset": [(50, 28, 95), (165, 60, 115), (250, 125, 50), (255, 205, 95)],
    "night": [(3, 5, 22), (12, 20, 60), (32, 42, 100)],
    "dawn": [(105, 135, 200), (230, 160, 195), (255, 225, 185)],
}
WEATHER_SKY = {  # blend the sky towards a colour (scaled by the time's light)
    "clear": (None, 0.0),
    "clouds": ((150, 150, 160), 0.25),
    "rain": ((85, 90, 100), 0.55),
    "snow": ((190, 195, 205), 0.5),
    "fog": ((200, 200, 200), 0.6),
}


def draw_sky(s: Scene, rng) -> None:
    """A dithered gradient from the zenith to the horizon, tinted by the weather."""
    jit = rng.uniform(0.92, 1.08, 3)
    keys = [np.asarray(k) * jit for k in SKY_KEYS[s.time]]
    tint, amount = WEATHER_SKY[s.weather]
    if tint is not None:
        keys = [mix(k, lit(tint, s.time) if s.time != "day" else tint, amount) for k in keys]
    sky_cols = gradient(keys, int(rng.integers(5, 8)))
    sky_idx = [s.pal.add(c) for c in sky_cols]
    s.horizon_rgb = sky_cols[-1]
    s.canvas = dithered_ramp(np.clip(YY / s.hz, 0, 1), sky_idx)


def draw_stars(s: Scene, rng) -> None:
    if "stars" not in s.cel:
        return
    canvas, pal = s.canvas, s.pal
    n = int(rng.integers(50, 130)) if s.weather == "clear" else int(rng.integers(20, 40))
    sy, sx = rng.integers(0, s.hz - 8, n), rng.integers(0, W, n)
    canvas[sy, sx] = pal.add((255, 255, 255))
    b = rng.random(n) < 0.35
    canvas[sy[b], sx[b]] = pal.add((170, 190, 255))
    for y, x in zip(sy[:6], sx[:6]):
        canvas[max(y - 1, 0) : y + 2, x] = pal.add((255, 255, 210))
        canvas[y, max(x - 1, 0) : x + 2] = pal.add((255, 255, 210))


def draw_sun_and_moon(s: Scene, rng) -> None:
    time, hz = s.time, s.hz
    s.body_x = int(rng.integers(30, W - 30))
    if "moon" in s.cel:
        r = rng.uniform(5, 9)
        m = disc(r)
        y0 = int(rng.integers(12, 50)) if time == "night" else int(rng.integers(10, 30))
        roles = m.astype(np.uint8)
        if rng.random() < 0.5:  # crescent
            shift = int(round(r * 0.7))
            cut = np.zeros_like(m)
            cut[: m.shape[0] - 1, shift:] = m[1:, : m.shape[1] - shift]
            roles[cut] = 0
        else:
            roles[m & (BAYER[: m.shape[0], : m.shape[1]] < 0.12)] = 2
        s.body_rgb = (240, 240, 215) if time == "night" else (235, 235, 245)
        lut = {1: s.pal.add(s.body_rgb), 2: s.pal.add((190, 190, 175))}
        stamp(s.canvas, roles, lut, s.body_x - m.shape[1] // 2, y0)
    if "sun" in s.cel:
        if time == "day":
            r, y0, col = rng.uniform(8, 12), int(rng.integers(12, 45)), (255, 245, 170)
        elif time == "sunset":
            r, col = rng.uniform(14, 20), (255, 140, 60)
            y0 = hz - int(r * rng.uniform(1.2, 2.0))
        else:
            r, col = rng.uniform(10, 15), (255, 228, 165)
            y0 = hz - int(r * rng.uniform(1.4, 2.4))
        m = disc(r)
        roles = m.astype(np.uint8)
        if time == "sunset":  # the retro striped setting sun
            rows = np.broadcast_to(np.arange(m.shape[0])[:, None], m.shape)
            roles[(rows > m.shape[0] // 2) & ((rows - m.shape[0] // 2) % 4 == 1)] = 0
            roles[m & (rows < m.shape[0] // 3)] = 2
        s.body_rgb = col
        lut = {1: s.pal.add(col), 2: s.pal.add((255, 200, 90))}
        stamp(s.canvas, roles, lut, s.body_x - m.shape[1] // 2, y0)


CLOUD_RGB = {  # (lit, shaded) per time of day
    "day": ((245, 245, 250), (195, 200, 220)),
    "sunset": ((250, 165, 145), (175, 95, 120)),
    "night": ((62, 68, 95), (40, 45, 72)),
    "dawn": ((255, 228, 230), (205, 175, 200)),
}


def draw_clouds(s: Scene, rng) -> None:
    """An overcast band in rain, snow and fog; then puffy clouds, as the weather has them."""
    canvas, weather = s.canvas, s.weather
    cloud_rgb = CLOUD_RGB[s.time]
    if weather in ("rain", "snow"):
        k = 0.55 if weather == "rain" else 0.85
        cloud_rgb = tuple(mix(np.asarray(c) * k, (128, 128, 135), 0.4) for c in cloud_rgb)
    c_main, c_shade = s.pal.add(cloud_rgb[0]), s.pal.add(cloud_rgb[1])
    if weather in ("rain", "snow", "fog"):
        base = profile(rng, "smooth", int(rng.integers(14, 30)), 12)
        over = YY < (base.max() + 2 - (base - base.min()))[None, :]
        canvas[over] = c_shade
        canvas[YY < (base.max() - 3 - (base - base.min()))[None, :]] = c_main
    n_clouds = {"clear": 0, "clouds": int(rng.integers(5, 9)), "fog": 0}.get(
        weather, int(rng.integers(2, 5))
    )
    for _ in range(n_clouds):
        cw = int(rng.integers(30, 80))
        ch = cw // 3 + 4
        roles = np.zeros((ch, cw), np.uint8)
        y, x = np.ogrid[:ch, :cw]
        for cx in np.linspace(ch / 2, cw - ch / 2, int(rng.integers(3, 6))):
            rr = rng.uniform(0.45, 0.95) * ch
            roles[((x - cx) ** 2 + (y - ch) ** 2 <= rr * rr)] = 1
        roles[(roles == 1) & (y >= ch - max(ch // 4, 2))] = 2
        roles[-1] = 0
        stamp(canvas, roles, {1: c_main, 2: c_shade}, int(rng.integers(-20, W - 10)),
              int(rng.integers(0, max(s.hz - 40, 5))))  # fmt: skip


def draw_weather(s: Scene, rng) -> None:
    """Fog bands, rain streaks or snowflakes over everything."""
    canvas, pal, time, hz = s.canvas, s.pal, s.time, s.hz
    if s.fog:
        fog_idx = pal.add(mix(s.horizon_rgb, lit((210, 212, 218), time), 0.5))
        fog2 = pal.add(mix(s.horizon_rgb, lit((180, 185, 195), time), 0.5))
        bands = [(hz - int(rng.integers(5, 30)), 0.8), (hz + int(rng.integers(0, 25)), 0.7),
                 (int(rng.integers(hz + 30, H)), 0.35)]  # fmt: skip
        for j, (cy, peak) in enumerate(bands):
            d = peak * np.exp(-(((YY - cy) / rng.uniform(7, 13)) ** 2))
            canvas[BAYER < d] = fog_idx if j % 2 == 0 else fog2
    if s.weather == "rain":
        n = int(rng.integers(180, 320))
        ry, rx = rng.integers(-8, H, n), rng.integers(0, W + 20, n)
        k = np.arange(int(rng.integers(5, 8)))
        ys = ry[:, None] + k[None, :]
        xs = rx[:, None] - k[None, :] // 3
        ok = (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
        canvas[ys[ok], xs[ok]] = pal.add(mix(lit((170, 185, 220), time), (255, 255, 255), 0.2))
    if s.snow:
        n = int(rng.integers(200, 340))
        fy, fx = rng.integers(0, H - 1, n), rng.integers(0, W - 1, n)
        flake = pal.add(mix(s.snow_rgb, (255, 255, 255), 0.6))
        canvas[fy, fx] = flake
        big = rng.random(n) < 0.3
        canvas[fy[big] + 1, fx[big]] = flake
        canvas[fy[big], fx[big] + 1] = flake
