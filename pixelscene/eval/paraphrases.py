"""Paraphrase prompts: scenes described in words the caption grammar never produces.

Users write "twilight", "woods", "a fort", "after dark", "wintry"; the captions the models
are trained on say "sunset", "oaks", "a castle", "at night", "snowy". Each table below maps
an attribute value to phrases that name it without any of the grammar's words for any
value (`pixelscene.data.captions.SYNONYMS`); a test checks that, and that every phrase has a
word the grammar never writes. `build_paraphrases` composes them into a fixed set of prompts
over coherent held-out attribute combinations, each scored on the attributes it names.
"""

from __future__ import annotations

import numpy as np

from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.eval.eval_prompt import EvalPrompt

PARAPHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "time": {
        "day": (
            "in the afternoon",
            "on a bright afternoon",
            "at lunchtime",
            "in high summer light",
        ),
        "sunset": ("at twilight", "in the golden hour", "in the gloaming", "as the light fades"),
        "night": ("after dark", "in darkness", "in the small hours", "in the witching hour"),
        "dawn": ("at sunup", "at cockcrow", "as the darkness lifts", "in the pale early light"),
    },
    "weather": {
        "clear": ("under blue skies", "with a spotless sky", "in calm bright weather"),
        "clouds": ("under a leaden sky", "beneath gloomy skies", "under a sullen sky"),
        "rain": ("in a thunderstorm", "in a squall", "under a deluge", "in wet stormy weather"),
        "snow": ("wintry", "in deep winter", "in a flurry", "frosty and icy"),
        "fog": ("in murky air", "wrapped in vapour", "in a pea-souper", "in smog"),
    },
    "terrain": {
        "mountains": ("among alpine summits", "under towering summits", "on a high massif"),
        "hills": ("on gentle slopes", "among low knolls", "on the rolling downs"),
        "plains": ("on the steppe", "across a pasture", "on the flatlands", "on a savanna"),
        "desert": ("in the arid wastes", "in the sahara", "on a scorching dry waste"),
        "coast": ("on the beach", "by crashing surf", "by the breaking waves", "on a headland"),
        "lake": ("by a pond", "beside a tarn", "on the shore of a loch", "by still fresh water"),
    },
    "landmark": {
        "castle": ("a fort", "a chateau", "a bastion", "a walled palace"),
        "cottage": ("a shack", "a croft", "a little house", "a log lodge"),
        "tower": ("a turret", "a belfry", "a tall lookout post"),
        "ruins": ("derelict walls", "a collapsed temple", "fallen pillars"),
        "lighthouse": ("a pharos", "a harbour light", "a lamp house for ships"),
        "none": ("with no buildings", "empty of people", "with no sign of humans"),
    },
    "vegetation": {
        "pine": ("with spruce trees", "among larches", "by a dark taiga"),
        "broadleaf": ("with maples", "among birch woods", "with elms", "by a beech woodland"),
        "palms": ("with coconut trees", "by a tropical grove", "with date trees"),
        "cacti": ("with prickly pears", "among spiny succulents", "with agaves"),
        "none": ("bare of plants", "devoid of greenery"),
    },
}


def build_paraphrases(count: int = 120, seed: int = 0) -> list[EvalPrompt]:
    """`count` paraphrase prompts (EvalPrompt), the same for the same seed in any process.

    Attribute combinations come from the held-out split, as for the grammar's prompts. Every
    attribute gets a phrase; "none" landmarks and vegetation are named only some of the time,
    as a user would rarely write them.
    """
    from pixelscene.data.synth import sample_attributes

    rng = np.random.default_rng([seed, 0xBA2A])
    prompts = []
    while len(prompts) < count:
        attrs = sample_attributes(rng, "test")
        attrs = {k: attrs[k] for k in ATTRIBUTES}
        phrase = {k: str(rng.choice(PARAPHRASES[k][attrs[k]])) for k in ATTRIBUTES}
        named = [k for k in ATTRIBUTES if attrs[k] != "none" or rng.random() < 0.3]
        subject = phrase["landmark"] if "landmark" in named else ""
        if subject.startswith("with") or subject.startswith("empty"):
            subject = f"a view {phrase['terrain']} {subject}"
        elif subject:
            subject = f"{subject} {phrase['terrain']}"
        else:
            subject = f"a scene {phrase['terrain']}"
        tail = [phrase[k] for k in ("vegetation", "time", "weather") if k in named]
        order = rng.permutation(len(tail))
        text = " ".join([subject, *[tail[i] for i in order]])
        prompts.append(EvalPrompt(text, attrs, tuple(named)))
    return prompts
