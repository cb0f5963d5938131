"""Vectorised drawing of one VGA-style 320x200 scene into a small per-scene palette.

The canvas holds palette indices; every colour goes through `Palette.add`, which snaps it to
the 6-bit DAC, so the final image uses 16-48 DAC colours with hard edges and no blending.
`render_scene` paints back to front in stages (sky, sun/moon/stars, clouds, silhouettes,
water, foreground, landmark, vegetation, weather), each drawing from the scene's one random
generator in a fixed order, so a (seed, attributes) pair always gives the same image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pixelscene.data.canvas import (
    BAYER,
    XX,
    YY,
    H,
    Palette,
    W,
    disc,
    dithered_ramp,
    fit_colors,
    gradient,
    mix,
    profile,
    stamp,
)
from pixelscene.data.sprite_art import LANDMARK_SPRITES, VEG_SPRITES

__all__ = ["H", "W", "render_scene"]


SKY_KEYS = {
    "day": [(40, 90, 200), (90, 150, 235), (175, 215, 250)],
    "sunset": [(50, 28, 95), (165, 60, 115), (250, 125, 50), (255, 205, 95)],
    "night": [(3, 5, 22), (12, 20, 60), (32, 42, 100)],
    "dawn": [(105, 135, 200), (230, 160, 195), (255, 225, 185)],
}
# Terrain light: rgb * mul + add, per time of day.
LIGHT = {
    "day": ((1.0, 1.0, 1.0), (0, 0, 0)),
    "sunset": ((0.8, 0.55, 0.55), (40, 5, 25)),
    "night": ((0.3, 0.32, 0.46), (4, 8, 30)),
    "dawn": ((0.85, 0.75, 0.82), (30, 12, 28)),
}
TERRAIN_COLORS = {  # (far layer, near layer, foreground detail)
    "mountains": ((110, 100, 130), (95, 85, 75), (70, 110, 50)),
    "hills": ((70, 120, 70), (60, 135, 45), (45, 105, 35)),
    "plains": ((100, 150, 70), (115, 165, 60), (190, 170, 70)),
    "desert": ((200, 135, 85), (220, 175, 105), (190, 145, 85)),
    "coast": ((95, 110, 95), (110, 100, 80), (222, 202, 140)),
    "lake": ((80, 110, 90), (70, 125, 50), (55, 100, 40)),
}
WEATHER_SKY = {  # blend the sky towards a colour (scaled by the time's light)
    "clear": (None, 0.0),
    "clouds": ((150, 150, 160), 0.25),
    "rain": ((85, 90, 100), 0.55),
    "snow": ((190, 195, 205), 0.5),
    "fog": ((200, 200, 200), 0.6),
}


def lit(rgb, time: str) -> np.ndarray:
    mul, add = LIGHT[time]
    return np.asarray(rgb, dtype=np.float64) * mul + add


def _layers(rng, terrain: str, hz: int) -> list[tuple[np.ndarray, bool]]:
    """Far-to-near (profile, jagged) pairs for the silhouettes behind the foreground."""
    n = {"mountains": 3, "hills": 2, "plains": 1, "desert": 2, "coast": 1, "lake": 1}[terrain]
    n = max(1, n - int(rng.random() < 0.3)) if terrain in ("mountains", "hills") else n
    out = []
    for i in range(n):
        f = 1 - i / max(n, 1)
        if terrain == "mountains":
            out.append((profile(rng, "jagged", hz - 28 - 45 * f, 30 + 30 * f), True))
        elif terrain == "hills":
            out.append((profile(rng, "smooth", hz - 15 - 25 * f, 18 + 14 * f), False))
        elif terrain == "plains":
            out.append((profile(rng, "smooth", hz - 5, 4), False))
        elif terrain == "desert":
            kind = "dunes" if i or rng.random() < 0.5 else "mesa"
            if kind == "mesa":
                p = profile(rng, "smooth", hz - 30, 40)
                out.append((np.maximum(p, p.min() + 14), False))
            else:
                out.append((profile(rng, "dunes", hz - 8 - 12 * f, 10 + 6 * f), False))
        elif terrain == "coast":
            p = profile(rng, "smooth", hz - 14, 10)
            side = rng.random() < 0.5
            cut = int(rng.integers(60, 140))
            p[(XX[0] > cut) if side else (XX[0] < W - cut)] = H
            out.append((p, False))
        else:  # lake: hills or mountains behind the water
            jag = rng.random() < 0.5
            p = profile(rng, "jagged" if jag else "smooth", hz - 45, 35)
            out.append((np.minimum(p, hz - 3 - (XX[0] // 6) % 2), jag))
    return out


@dataclass
class _Scene:
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


def render_scene(attrs: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Draw one scene. Returns (rgb uint8 (200, 320, 3), extra facts about the drawing:
    "horizon", "colors", and "sprites", an (H, W) bool mask of the pixels the landmark and
    vegetation sprites drew before the weather went on top)."""
    s = _Scene(attrs)
    s.hz = int(rng.integers(112, 130))
    _sky(s, rng)
    _stars(s, rng)
    _sun_and_moon(s, rng)
    _clouds(s, rng)
    _silhouettes(s, rng)
    if s.terrain in ("coast", "lake"):
        _water(s, rng)
    _foreground(s, rng)
    before_sprites = s.canvas.copy()
    if s.landmark != "none":
        _landmark(s, rng)
    if s.veg != "none":
        _vegetation(s, rng)
    sprites = s.canvas != before_sprites  # the landmark's and vegetation's pixels
    _weather(s, rng)
    canvas = fit_colors(s.canvas, s.pal, rng, s.fg)
    rgb = s.pal.array()[canvas]
    return rgb, {"horizon": s.hz, "colors": int(len(np.unique(canvas))), "sprites": sprites}


def _sky(s: _Scene, rng) -> None:
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


def _stars(s: _Scene, rng) -> None:
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


def _sun_and_moon(s: _Scene, rng) -> None:
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


def _clouds(s: _Scene, rng) -> None:
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


def _silhouettes(s: _Scene, rng) -> None:
    """The terrain's far-to-near layers, hazed towards the horizon colour with distance."""
    canvas, time = s.canvas, s.time
    far, near, _ = TERRAIN_COLORS[s.terrain]
    s.layers = _layers(rng, s.terrain, s.hz)
    haze = 0.5 + (0.3 if s.fog else 0.0)
    s.snow_rgb = lit((235, 240, 250), time)
    for i, (prof, jag) in enumerate(s.layers):
        f = 1 - i / len(s.layers)
        col = mix(lit(mix(near, far, f), time), s.horizon_rgb, haze * f)
        main, shade = s.pal.add(col), s.pal.add(col * 0.82)
        mask = YY >= prof[None, :]
        canvas[mask] = main
        if jag:
            smooth = np.convolve(prof.astype(np.float64), np.ones(9) / 9, mode="same")
            faces = np.gradient(smooth) > 0
            canvas[mask & faces[None, :] & (YY < prof[None, :] + 40)] = shade
        else:
            canvas[mask & (YY > prof[None, :] + 4) & (BAYER < 0.5)] = shade
        if s.snow:
            cap = s.pal.add(mix(s.snow_rgb, s.horizon_rgb, haze * f * 0.5))
            canvas[mask & (YY < prof[None, :] + (7 if jag else 2))] = cap


def _water(s: _Scene, rng) -> None:
    """Sea to the bottom edge, or a lake band: a dithered ramp with glints, the far shore's
    reflection (lake) or a bright horizon line (sea), and the sun's or moon's reflection."""
    canvas, pal, hz, time = s.canvas, s.pal, s.hz, s.time
    wb = H if s.terrain == "coast" else hz + int(rng.integers(28, 44))
    sea = (30, 85, 160) if s.terrain == "coast" else (45, 105, 140)
    wcols = [mix(lit(sea, time), s.horizon_rgb, a) for a in (0.55, 0.3, 0.1)]
    widx = [pal.add(c) for c in wcols]
    tw = np.clip((YY[hz:wb] - hz) / max(wb - hz, 1), 0, 1)
    rows = (YY >= hz) & (YY < wb)
    canvas[hz:wb] = dithered_ramp(tw, widx, hz)
    if s.terrain == "lake" and s.layers:
        prof = s.layers[-1][0]
        refl = rows & (YY - hz < (hz - prof[None, :]) * 0.6) & (YY % 3 != 0)
        canvas[refl] = pal.add(mix(wcols[1], (0, 0, 0), 0.35))
    else:
        canvas[hz, :] = pal.add(mix(wcols[0], (255, 255, 255), 0.25))
    n = int(rng.integers(40, 90))
    wy = rng.integers(hz + 2, wb, n)
    wx = rng.integers(0, W - 8, n)
    ln = rng.integers(2, 7, n)
    xs = (wx[:, None] + np.arange(8)[None, :]).clip(0, W - 1)
    ok = np.arange(8)[None, :] < ln[:, None]
    canvas[np.broadcast_to(wy[:, None], xs.shape)[ok], xs[ok]] = pal.add(
        mix(wcols[2], (255, 255, 255), 0.35)
    )
    if s.body_rgb is not None:
        ry = np.arange(hz + 2, wb, 2)
        half = (2 + (ry - hz) // 6 + rng.integers(0, 3, ry.size)).clip(0, 10)
        xs = np.broadcast_to(s.body_x + np.arange(-10, 11)[None, :], (ry.size, 21))
        ok = np.abs(np.arange(-10, 11))[None, :] <= half[:, None]
        canvas[np.broadcast_to(ry[:, None], xs.shape)[ok], xs[ok].clip(0, W - 1)] = pal.add(
            mix(s.body_rgb, wcols[1], 0.3)
        )
    s.water_rows = (hz, wb)


def _foreground(s: _Scene, rng) -> None:
    """The ground in front (a cliff by the sea, a lake shore, or the terrain's own ground),
    with dithered depth shading, a top edge of grass/sand/snow and scattered specks."""
    canvas, pal, time, terrain = s.canvas, s.pal, s.time, s.terrain
    _, near, detail = TERRAIN_COLORS[terrain]
    fg_base = int(rng.integers(160, 172))
    if terrain == "coast":
        land_left = rng.random() < 0.5
        land_w = int(rng.integers(120, 190))
        xx = XX[0] if land_left else W - 1 - XX[0]
        cliff = profile(rng, "smooth", s.hz + int(rng.integers(12, 30)), 8)
        fg = np.where(xx < land_w, cliff, H - 6 + (xx // 40) % 2)
        slope = (xx >= land_w) & (xx < land_w + 24)
        fg = np.where(slope, cliff + (xx - land_w) * (H - 6 - cliff) // 24, fg)
        usable = xx < land_w - 6
    elif terrain == "lake":
        fg = profile(rng, "smooth", s.water_rows[1], 6)
        usable = np.ones(W, bool)
    else:
        kind = {"desert": "dunes", "plains": "smooth"}.get(terrain, "smooth")
        fg = profile(rng, kind, fg_base, {"plains": 3, "desert": 10}.get(terrain, 10))
        usable = np.ones(W, bool)
    fg_rgb = lit(near if terrain != "coast" else (110, 100, 80), time)
    if s.snow:
        fg_rgb = mix(s.snow_rgb, fg_rgb, 0.15)
    fmask = YY >= fg[None, :]
    canvas[fmask] = pal.add(fg_rgb)
    depth = YY - fg[None, :]
    canvas[fmask & (BAYER < np.clip(depth / 40.0, 0, 0.6))] = pal.add(fg_rgb * 0.8)
    top_rgb = lit(detail, time) if not s.snow else s.snow_rgb * 1.02
    if terrain == "coast":
        top_rgb = lit((70, 130, 50), time) if not s.snow else s.snow_rgb
        canvas[fmask & (YY >= H - 8) & ~usable[None, :]] = pal.add(lit(detail, time))
    if terrain == "plains" and not s.snow:
        canvas[fmask & ((depth // 5) % 2 == 1) & (BAYER < 0.75)] = pal.add(top_rgb)
    else:
        canvas[fmask & (depth < 2 + (BAYER < 0.5))] = pal.add(top_rgb)
    n = 60
    ty, tx = rng.integers(0, H, n), rng.integers(0, W, n)
    keep = ty > fg[tx] + 3
    canvas[ty[keep], tx[keep]] = pal.add(mix(top_rgb, fg_rgb, 0.5) * 1.1)
    s.fg, s.usable = fg, usable


LANDMARK_STONE = {
    "castle": (150, 150, 160), "tower": (145, 135, 120), "ruins": (150, 140, 120),
    "cottage": (215, 200, 160), "lighthouse": (235, 235, 228),
}  # fmt: skip
LANDMARK_ACCENT = {
    "castle": (160, 45, 45), "tower": (80, 85, 130), "ruins": (80, 120, 55),
    "cottage": (165, 65, 40), "lighthouse": (200, 35, 35),
}  # fmt: skip


def _landmark(s: _Scene, rng) -> None:
    """The landmark on usable ground, its windows lit at night and sunset (a lighthouse's
    beam at night)."""
    canvas, pal, time, landmark = s.canvas, s.pal, s.time, s.landmark
    spr = LANDMARK_SPRITES[landmark](rng)
    sh, sw = spr.shape
    usable, fg = s.usable, s.fg
    cand = np.flatnonzero(usable[: W - sw] & usable[sw - 1 :][: W - sw])
    cand = cand[(cand > 8) & (cand < W - sw - 8)]
    x0 = int(rng.choice(cand)) if cand.size else (W - sw) // 2
    base = int(fg[x0 : x0 + sw].max()) + 2
    lit_windows = time in ("night", "sunset")
    stone, accent = LANDMARK_STONE[landmark], LANDMARK_ACCENT[landmark]
    lamp = (255, 225, 90) if lit_windows else (45, 45, 65)
    if landmark == "lighthouse":
        lamp = (255, 245, 130) if time == "night" else (175, 205, 215)
    lut = {
        1: pal.add(lit(stone, time)),
        2: pal.add(lit(stone, time) * 0.75),
        3: pal.add(lit((45, 38, 45), time)),
        4: pal.add(lamp),
        5: pal.add(lit(accent, time) if not (s.snow and landmark == "cottage") else s.snow_rgb),
    }
    y0 = base - sh + 1
    if landmark == "lighthouse" and time == "night":
        ly, lx = y0 + sh - (sh - 16) - 6, x0 + sw // 2
        dx = np.abs(XX - lx)
        beam = (np.abs(YY - ly) <= dx * 0.12 + 1) & (dx > 3) & (dx < 130) & (BAYER < 0.5)
        canvas[beam] = pal.add(mix(lamp, s.horizon_rgb, 0.45))
    stamp(canvas, spr, lut, x0, y0)
    s.span = (x0 - 6, x0 + sw + 6)


VEG_LEAF = {"pine": (35, 90, 55), "broadleaf": (65, 135, 45), "palms": (60, 145, 55),
            "cacti": (75, 140, 65)}  # fmt: skip


def _vegetation(s: _Scene, rng) -> None:
    """Small trees along the last silhouette (pines, broadleaves), big ones in the
    foreground clear of the landmark."""
    canvas, pal, time, veg = s.canvas, s.pal, s.time, s.veg
    sprite = VEG_SPRITES[veg]
    leaf = VEG_LEAF[veg]
    lut = {
        1: pal.add(lit(leaf, time)),
        2: pal.add(lit(leaf, time) * 0.7),
        3: pal.add(lit((105, 70, 40), time)),
        5: pal.add(lit((120, 90, 40), time)),
        6: pal.add(s.snow_rgb) if s.snow else pal.add(lit(leaf, time) * 1.25),
        7: pal.add(lit(leaf, time) * 1.25),
    }
    if s.terrain not in ("coast", "lake") and len(s.layers) and veg in ("pine", "broadleaf"):
        prof = s.layers[-1][0]
        for x in np.sort(rng.integers(0, W, int(rng.integers(6, 14)))):
            spr = sprite(rng, 0.45)
            stamp(canvas, spr, lut, int(x) - spr.shape[1] // 2, int(prof[x]) - spr.shape[0] + 3)
    xs_ok = np.flatnonzero(s.usable & ((XX[0] < s.span[0]) | (XX[0] > s.span[1])))
    count = int(rng.integers(3, 8)) if veg in ("pine", "broadleaf") else int(rng.integers(2, 5))
    if xs_ok.size:
        for x in np.sort(rng.choice(xs_ok, min(count, xs_ok.size), replace=False)):
            spr = sprite(rng, rng.uniform(0.8, 1.15))
            base = int(s.fg[max(x - 2, 0) : x + 3].max()) + 2
            stamp(canvas, spr, lut, int(x) - spr.shape[1] // 2, base - spr.shape[0])


def _weather(s: _Scene, rng) -> None:
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
