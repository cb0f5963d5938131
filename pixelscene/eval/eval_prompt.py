"""One scored prompt of an adherence set (`eval.adherence`'s grammar prompts and
`eval.paraphrases`' paraphrases alike)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalPrompt:
    text: str
    attributes: dict[str, str]  # the held-out combination the prompt was written from
    named: tuple[str, ...]  # the attributes the text names: only these are scored
