"""The scene attributes the renderer draws, the captions name and the probe classifies."""

from __future__ import annotations

TIMES = ("day", "sunset", "night", "dawn")
WEATHERS = ("clear", "clouds", "rain", "snow", "fog")
TERRAINS = ("mountains", "hills", "plains", "desert", "coast", "lake")
LANDMARKS = ("castle", "cottage", "tower", "ruins", "lighthouse", "none")
VEGETATIONS = ("pine", "broadleaf", "palms", "cacti", "none")
CELESTIALS = ("sun", "moon", "stars")

# The five categorical attributes the probe predicts and adherence is measured on.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "time": TIMES,
    "weather": WEATHERS,
    "terrain": TERRAINS,
    "landmark": LANDMARKS,
    "vegetation": VEGETATIONS,
}
