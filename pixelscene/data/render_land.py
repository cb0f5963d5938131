"""The renderer's stages of the land: silhouettes of the terrain, water, the foreground
ground, the landmark and the vegetation. Each draws from the scene's generator in turn."""

from __future__ import annotations

import numpy as np

from pixelscene.data.canvas import (
    BAYER,
    XX,
    YY,
    H,
    W,
    dithered_ramp,
    mix,
    profile,
    stamp,
)
from pixelscene.data.scene import Scene, lit
from pixelscene.data.sprite_art import LANDMARK_SPRITES, VEG_SPRITES

TERRAIN_COLORS = {  # (far layer, near layer, foreground detail)
    "mountains": ((110, 100, 130), (95, 85, 75), (70, 110, 50)),
    "hills": ((70, 120, 70), (60, 135, 45), (45, 105, 35)),
    "plains": ((100, 150, 70), (115, 165, 60), (190, 170, 70)),
    "desert": ((200, 135, 85), (220, 175, 105), (190, 145, 85)),
    "coast": ((95, 110, 95), (110, 100, 80), (222, 202, 140)),
    "lake": ((80, 110, 90), (70, 125, 50), (55, 100, 40)),
}


def terrain_layers(rng, terrain: str, hz: int) -> list[tuple[np.ndarray, bool]]:
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


def draw_silhouettes(s: Scene, rng) -> None:
    """The terrain's far-to-near layers, hazed towards the horizon colour with distance."""
    canvas, time = s.canvas, s.time
    far, near, _ = TERRAIN_COLORS[s.terrain]
    s.layers = terrain_layers(rng, s.terrain, s.hz)
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


def draw_water(s: Scene, rng) -> None:
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


def draw_foreground(s: Scene, rng) -> None:
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


def draw_landmark(s: Scene, rng) -> None:
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


def draw_vegetation(s: Scene, rng) -> None:
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
