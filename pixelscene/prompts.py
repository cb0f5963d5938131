"""Prompts as the commands and the API take them: the longest allowed, the showcase list
that the README's grid draws (`pixelscene grid`), and prompt-list files (one a line).

The showcase prompts are written in the caption grammar's words (`pixelscene.data.captions`):
each names a time of day, a weather, a terrain and, where the scene has them, a landmark and
vegetation; no two name the same combination, and together they name every value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pixelscene.errors import PixelsceneError

PROMPT_MAX = 500  # characters, as the API's generation requests allow

SHOWCASE_PROMPTS: tuple[str, ...] = (
    "a castle on rolling hills with oaks at sunset, clear",
    "a lighthouse on a rocky coast at night, cloudy",
    "desert dunes with cacti at noon, clear sky",
    "snowy mountains with pine trees at dawn",
    "ancient ruins on a hillside in thick fog at dawn",
    "a cottage by a calm lake with pines at dusk, clear",
    "a watchtower in the mountains in a blizzard at night",
    "a farmhouse on the plains with oaks in rain at noon",
    "a lighthouse by the sea with palms at dawn, overcast",
    "a stone tower in the dunes with cacti at dusk, hazy",
    "a quiet lake under a starry sky at midnight, misty",
    "a fortress by a lake with oaks at dawn in drizzle",
    "ruins in the desert with palms at noon, clear sky",
    "a cabin on a hillside with pines in snow at noon",
    "the seaside with swaying palms in heavy rain at dusk",
    "a fortress on open grassland at night, overcast",
)

# Control characters (tab and line breaks aside) and the bidirectional embeddings,
# overrides and isolates that make text read other than it is stored (U+202A-U+202E,
# U+2066-U+2069; the marks U+200E, U+200F and U+061C are text), as a regex class body: the
# API's request schema refuses the same ones.
CONTROL_CHARS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")


def prompt_problem(prompt: str) -> str | None:
    """What is wrong with a prompt (too long, a control character), or None: the checks the
    API's generation requests make."""
    if len(prompt) > PROMPT_MAX:
        return f"prompt is {len(prompt)} characters, at most {PROMPT_MAX}"
    bad = _CONTROL.search(prompt)
    if bad:
        return f"control character U+{ord(bad.group()):04X} in the prompt"
    return None


class PromptFileError(PixelsceneError):
    """A prompt-list file is unreadable or holds a bad line; the message names file and line."""


def read_prompt_file(path: str | os.PathLike) -> list[str]:
    """The prompts of a file, one a line; blank lines and lines starting with '#' skipped.

    Raises:
        PromptFileError: the file cannot be read, is not UTF-8, holds no prompt, or a line
            is longer than PROMPT_MAX or holds a control character ("FILE:LINE: ...").
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PromptFileError(f"cannot read {path}: {e.strerror or e}") from None
    prompts = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            raise PromptFileError(f"{path}:{number}: not UTF-8 text") from None
        if not line or line.startswith("#"):
            continue
        problem = prompt_problem(line)
        if problem:
            raise PromptFileError(f"{path}:{number}: {problem}")
        prompts.append(line)
    if not prompts:
        raise PromptFileError(
            f"{path}: no prompts (one a line; blank lines and # comments are skipped)"
        )
    return prompts
