"""Caption grammar: varied English descriptions of a scene that never name what it lacks.

`SYNONYMS` lists, per attribute value, every word or phrase the grammar may use for it; no
phrase of one value appears inside a phrase of another, so `named_values(caption)` can tell
which values a caption names (tests check a caption names only values the image has).
"""

from __future__ import annotations

import re

SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "time": {
        "day": ("day", "daytime", "daylight", "midday", "noon"),
        "sunset": ("sunset", "dusk", "evening", "sundown"),
        "night": ("night", "nighttime", "midnight"),
        "dawn": ("dawn", "sunrise", "daybreak", "morning", "first light"),
    },
    "weather": {
        "clear": ("clear", "cloudless", "fair weather"),
        "clouds": ("cloudy", "clouds", "overcast"),
        "rain": ("rain", "rainy", "drizzle", "downpour", "rainfall", "showers"),
        "snow": ("snow", "snowy", "snowfall", "blizzard", "snowing"),
        "fog": ("fog", "foggy", "mist", "misty", "haze", "hazy"),
    },
    "terrain": {
        "mountains": ("mountains", "mountain", "peaks", "crags"),
        "hills": ("hills", "hillside", "hilly"),
        "plains": ("plains", "grassland", "meadow", "prairie", "fields", "farmland"),
        "desert": ("desert", "dunes", "sands"),
        "coast": ("coast", "coastline", "sea", "seaside", "ocean", "seashore"),
        "lake": ("lake", "lakeside", "lakeshore"),
    },
    "landmark": {
        "castle": ("castle", "fortress", "keep", "citadel", "stronghold"),
        "cottage": ("cottage", "cabin", "hut", "farmhouse", "homestead"),
        "tower": ("tower", "watchtower", "spire"),
        "ruins": ("ruins", "ruined", "remains", "rubble"),
        "lighthouse": ("lighthouse", "beacon"),
        "none": ("wilderness", "untouched", "unspoiled"),
    },
    "vegetation": {
        "pine": ("pine", "pines", "conifers", "firs", "evergreens"),
        "broadleaf": ("oak", "oaks", "leafy trees", "broadleaf", "deciduous"),
        "palms": ("palm", "palms"),
        "cacti": ("cactus", "cacti", "saguaro", "saguaros"),
        "none": ("treeless", "barren"),
    },
    "celestial": {
        "sun": ("sun", "sunny", "sunlit", "sunshine", "sunlight"),
        "moon": ("moon", "moonlit", "moonlight"),
        "stars": ("stars", "starry", "starlit"),
    },
}

SUBJECT = {
    "castle": ["castle", "fortress", "keep", "citadel", "stronghold"],
    "cottage": ["cottage", "cabin", "hut", "farmhouse"],
    "tower": ["tower", "watchtower", "stone tower"],
    "ruins": ["ruins", "ancient ruins", "crumbling ruins"],
    "lighthouse": ["lighthouse", "striped lighthouse"],
}
SUBJECT_ADJ = ["lonely", "old", "small", "distant", "lone", "quiet", "ancient", "remote"]
PLURAL = {"ruins"}
TERRAIN_NOUN = {
    "mountains": ["mountains", "jagged mountains", "a mountain range", "craggy peaks"],
    "hills": ["rolling hills", "hills", "a hillside", "hilly country"],
    "plains": ["open plains", "grassland", "a wide meadow", "flat farmland", "the prairie"],
    "desert": ["desert", "sand dunes", "a sandy desert", "desert dunes"],
    "coast": ["a rocky coast", "the seaside", "a coastline", "the ocean", "sea cliffs"],
    "lake": ["a lake", "a calm lake", "the lakeside", "a quiet lake"],
}
TERRAIN_LOC = {
    "mountains": ["in the mountains", "below jagged peaks", "among the mountains",
                  "beneath towering mountains"],
    "hills": ["on rolling hills", "on a hillside", "in the hills", "among the hills"],
    "plains": ["on the plains", "in a wide meadow", "on open grassland", "across the prairie",
               "among the fields"],
    "desert": ["in the desert", "among sand dunes", "on the desert dunes", "in the sands"],
    "coast": ["on a rocky coast", "by the sea", "on the seaside cliffs", "overlooking the ocean",
              "on the coast"],
    "lake": ["by a lake", "on the lakeshore", "beside a calm lake", "at the lakeside"],
}  # fmt: skip
VEG = {
    "pine": ["with pine trees", "among pines", "by a pine forest", "with tall conifers",
             "framed by evergreens"],
    "broadleaf": ["with oak trees", "among leafy trees", "with broadleaf trees", "among oaks"],
    "palms": ["with palm trees", "among palms", "with swaying palms"],
    "cacti": ["with cacti", "dotted with saguaro cactus", "among cacti", "with a few cacti"],
    "none": ["", "", "barren and treeless"],
}  # fmt: skip
VEG_SHORT = {"pine": "pines", "broadleaf": "oaks", "palms": "palms", "cacti": "cacti"}
TIME_LOC = {
    "day": ["during the day", "in daylight", "at midday", "in the daytime", "at noon"],
    "sunset": ["at sunset", "at dusk", "in the evening", "at sundown"],
    "night": ["at night", "by night", "at midnight", "in the night"],
    "dawn": ["at dawn", "at sunrise", "at daybreak", "in the early morning", "at first light"],
}
TIME_ADJ = {
    "day": ["daytime", "midday"],
    "sunset": ["sunset", "dusk", "evening"],
    "night": ["night", "nighttime", "midnight"],
    "dawn": ["dawn", "sunrise", "early morning"],
}
WEATHER_LOC = {
    "clear": ["under a clear sky", "under cloudless skies", "in fair weather"],
    "clouds": ["under a cloudy sky", "under heavy clouds", "beneath drifting clouds",
               "under an overcast sky"],
    "rain": ["in the rain", "in a downpour", "in light drizzle", "in heavy rain"],
    "snow": ["in the snow", "during a snowfall", "in a blizzard", "in falling snow"],
    "fog": ["in thick fog", "in the mist", "shrouded in mist", "in the haze"],
}  # fmt: skip
WEATHER_TAIL = {
    "clear": ["clear sky", "clear weather"],
    "clouds": ["cloudy", "overcast", "grey clouds"],
    "rain": ["light rain", "heavy rain", "rainy", "drizzle"],
    "snow": ["snowing", "heavy snow", "snowfall"],
    "fog": ["foggy", "misty", "thick fog"],
}
WEATHER_ADJ = {
    "clear": ["clear"],
    "clouds": ["cloudy", "overcast"],
    "rain": ["rainy"],
    "snow": ["snowy"],
    "fog": ["foggy", "misty", "hazy"],
}
PREFIX = ["pixel art of", "a VGA scene of", "retro game background:", "an 8-bit style view of",
          "a 256-color painting of"]  # fmt: skip
MAX_WORDS, MIN_WORDS = 25, 3


def _celestial_phrases(time: str, cel: set[str]) -> list[str]:
    out = []
    if "stars" in cel and "moon" in cel:
        out += ["under a starry night sky", "beneath the moon and stars"]
    elif "stars" in cel:
        out += ["under the stars", "under a starry sky", "beneath starlit skies"]
    elif "moon" in cel:
        out += ["under the moon", "in the moonlight", "beneath a pale moon"]
    if "sun" in cel:
        out += {
            "day": ["under a bright sun", "in the sunshine", "in warm sunlight"],
            "sunset": ["with the setting sun", "under a red sun"],
            "dawn": ["with the rising sun", "under a pale sun"],
        }.get(time, [])
    return out


def _choice(rng, options):
    return options[int(rng.integers(len(options)))]


def _with_article(rng, noun: str, adj: str | None = None) -> str:
    words = f"{adj} {noun}" if adj else noun
    if noun.split()[-1] in PLURAL:
        return _choice(rng, ["the ", "", "some "]) + words
    return ("an " if words[0] in "aeiou" else "a ") + words


def caption_for(attrs: dict, rng, complete: bool = False) -> str:
    """A caption for an attribute dict; names nothing the scene lacks.

    Args:
        attrs: time, weather, terrain, landmark, vegetation and optionally celestial.
        rng: a numpy Generator.
        complete: name every attribute (except "none" values), as prompts for evaluation do.
    Returns:
        A caption of 3 to 25 words.
    """
    time, weather, terrain = attrs["time"], attrs["weather"], attrs["terrain"]
    landmark, veg = attrs["landmark"], attrs["vegetation"]
    cel = set(attrs.get("celestial", ()))
    if not complete and rng.random() < 0.22:
        return _short(attrs, rng)
    p = 1.0 if complete else 0.7
    mods: list[str] = []
    if landmark != "none":
        subject = _with_article(
            rng, _choice(rng, SUBJECT[landmark]),
            _choice(rng, SUBJECT_ADJ) if rng.random() < 0.4 else None,
        )  # fmt: skip
        if complete or rng.random() < 0.85:
            mods.append(_choice(rng, TERRAIN_LOC[terrain]))
    else:
        subject = _choice(rng, TERRAIN_NOUN[terrain])
    if veg != "none" and (complete or rng.random() < p):
        mods.append(_choice(rng, VEG[veg]))
    elif veg == "none" and not complete and rng.random() < 0.15:
        mods.append(_choice(rng, VEG["none"]))
    time_adj = None
    if complete or rng.random() < p + 0.1:
        if rng.random() < 0.25:
            time_adj = _choice(rng, TIME_ADJ[time])
        else:
            mods.append(_choice(rng, TIME_LOC[time]))
    cel_opts = _celestial_phrases(time, cel)
    if cel_opts and not complete and rng.random() < 0.5:
        mods.append(_choice(rng, cel_opts))
    tail = None
    if complete or rng.random() < p:
        r = rng.random()
        if r < 0.4:
            mods.append(_choice(rng, WEATHER_LOC[weather]))
        elif r < 0.75:
            tail = _choice(rng, WEATHER_TAIL[weather])
        elif time_adj is None:
            time_adj = _choice(rng, WEATHER_ADJ[weather])
        else:
            tail = _choice(rng, WEATHER_TAIL[weather])
    mods = [m for m in mods if m]
    # Keep the terrain phrase first most of the time; shuffle the rest.
    head, rest = mods[:1], mods[1:]
    rng.shuffle(rest)
    mods = head + rest if rng.random() < 0.7 else rest + head
    if time_adj:
        if landmark != "none":
            subject = f"{time_adj} view of {subject}"
        else:
            subject = f"{time_adj} {subject.removeprefix('a ').removeprefix('the ')}"
    use_prefix = not complete and time_adj is None and rng.random() < 0.12
    prefix = _choice(rng, PREFIX) if use_prefix else ""

    def build(ms, t):
        s = " ".join(x for x in (prefix, subject, *ms) if x)
        return f"{s}, {t}" if t else s

    text = build(mods, tail)
    while len(text.split()) > MAX_WORDS and (mods or tail):
        if tail and not complete:
            tail = None
        elif len(mods) > 1:
            mods = mods[:-1]
        else:
            prefix = ""
            break
        text = build(mods, tail)
    if len(text.split()) < MIN_WORDS:
        text = build(mods + [_choice(rng, TIME_LOC[time])], tail)
    return _finish(text, rng)


def _short(attrs: dict, rng) -> str:
    """Two- or three-part captions: 'castle at dusk', 'foggy hills', 'desert palms at night'."""
    time, weather, terrain = attrs["time"], attrs["weather"], attrs["terrain"]
    landmark, veg = attrs["landmark"], attrs["vegetation"]
    noun = (
        _choice(rng, SUBJECT[landmark])
        if landmark != "none" and rng.random() < 0.7
        else _choice(rng, TERRAIN_NOUN[terrain])
    )
    forms = [
        f"{noun} {_choice(rng, TIME_LOC[time])}",
        f"{_choice(rng, WEATHER_ADJ[weather])} {noun} {_choice(rng, TIME_LOC[time])}",
        f"{noun} {_choice(rng, WEATHER_LOC[weather])}",
    ]
    if veg != "none":
        forms.append(f"{noun} {_choice(rng, VEG[veg])}")
        forms.append(f"{VEG_SHORT[veg]} and {noun} {_choice(rng, TIME_LOC[time])}")
    text = _choice(rng, forms)
    for art in ("a ", "the "):
        text = text.removeprefix(art)
    if len(text.split()) < MIN_WORDS:
        text = f"{text} {_choice(rng, TIME_LOC[time])}"
    return _finish(text, rng)


def _finish(text: str, rng) -> str:
    text = " ".join(text.split())
    if rng.random() < 0.55:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.3:
        text += "."
    return text


_PATTERNS = {
    (attr, value): re.compile(r"\b(" + "|".join(re.escape(p) for p in phrases) + r")\b", re.I)
    for attr, table in SYNONYMS.items()
    for value, phrases in table.items()
}


def named_values(caption: str) -> set[tuple[str, str]]:
    """The (attribute, value) pairs whose words appear in a caption."""
    return {key for key, pat in _PATTERNS.items() if pat.search(caption)}
