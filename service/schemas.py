"""Request schemas: plain dicts in a JSON Schema subset, used to validate and to document.

One schema per request body. `validate(schema, body)` checks it and returns the body with
defaults filled in, or raises `ValidationError` naming every bad field; `openapi.py` puts the
very same dicts into `/openapi.json`, so the document cannot drift from what is enforced.

Supported keywords: type (object, string, integer, number, boolean), properties, required,
additionalProperties (false only), default, enum, minimum, maximum, exclusiveMinimum,
exclusiveMaximum, minLength, maxLength, pattern, format (uri: http/https only), anyOf,
description.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from workers.jobstore.settings import JobSettings

PROMPT_MAX = 500
SEED_LIMIT = 2**31
# auto:N with N in 2..256, as a pattern so that it documents itself.
PALETTE_PATTERN = r"^(none|vga|auto:([2-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-6]))$"


class ValidationError(ValueError):
    """One message per bad field."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def generation_schema(settings: JobSettings) -> dict[str, Any]:
    """`POST /v1/generations`: the models and named palettes are this deployment's."""
    palette_names = sorted(settings.palettes)
    palette: dict[str, Any] = {
        "type": "string",
        "default": "none",
        "description": "none, vga, auto:N (2 <= N <= 256) or a named palette",
        "anyOf": [{"pattern": PALETTE_PATTERN}],
    }
    if palette_names:
        palette["anyOf"].append({"enum": palette_names})
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "maxLength": PROMPT_MAX, "pattern": r"\S"},
            "n": {"type": "integer", "minimum": 1, "maximum": 16, "default": 1},
            "seed": {
                "type": "integer",
                "minimum": 0,
                "exclusiveMaximum": SEED_LIMIT,
                "description": "base seed; image j gets seed + j. Omitted: chosen at random",
            },
            "temperature": {"type": "number", "exclusiveMinimum": 0, "maximum": 5},
            "top_k": {"type": "integer", "minimum": 0, "maximum": 512, "description": "0 = off"},
            "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "cfg_scale": {"type": "number", "minimum": 0, "maximum": 20},
            "palette": palette,
            "scale": {"type": "integer", "minimum": 1, "maximum": 8, "default": 1},
            "model": {
                "type": "string",
                "enum": sorted(settings.models),
                "default": settings.default_model,
            },
            "webhook": {
                "type": "string",
                "format": "uri",
                "maxLength": 2000,
                "description": "http(s) URL that gets the job JSON (signed) when the job ends",
            },
        },
    }


def training_schema(settings: JobSettings) -> dict[str, Any]:
    """`POST /v1/trainings`: run `pixelscene train <stage>` on a dataset folder."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["stage", "dataset"],
        "properties": {
            "stage": {
                "type": "string",
                "enum": ["vqgan", "transformer", "decoder"],
                "description": "decoder: fine-tune the VQGAN decoder of model `vqgan` on whole "
                "images; its codes (and a transformer trained on them) stay valid",
            },
            "dataset": {
                "type": "string",
                "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                "description": "a dataset folder name under the server's datasets directory",
            },
            "config": {
                "type": "string",
                "enum": ["tiny", "tiny-learned", "tiny-sprites", "tiny-sprites-2", "base"],
                "default": "tiny",
                "description": "a preset in configs/ (tiny-sprites: the sprite-weighted "
                "fine-tune, with `init_from`)",
            },
            "steps": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            "max_minutes": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 10080,
                "description": "stop (evaluated and exported) once training has run this long",
            },
            "vqgan": {
                "type": "string",
                "enum": sorted(settings.models),
                "description": "stages transformer and decoder (required): the model whose VQGAN "
                "the transformer trains on, or whose decoder is fine-tuned",
            },
            "init_from": {
                "type": "string",
                "enum": sorted(settings.models),
                "description": "stage transformer: start from this model's transformer weights "
                "(a fine-tune: new optimizer and schedule; the config's architecture must match)",
            },
            "webhook": {"type": "string", "format": "uri", "maxLength": 2000},
        },
    }


def validate(schema: Mapping[str, Any], body: Any) -> dict[str, Any]:
    """Check an object body; returns a copy with defaults; raises ValidationError (all fields)."""
    if not isinstance(body, dict):
        raise ValidationError({"(body)": "must be a JSON object"})
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    properties = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in body or body[name] is None:
            errors[name] = "is required"
    if schema.get("additionalProperties") is False:
        for name in body:
            if name not in properties:
                errors[name] = "is not a known field"
    for name, sub in properties.items():
        if name in errors:
            continue
        if name in body and body[name] is not None:
            message = check_value(sub, body[name])
            if message:
                errors[name] = message
            else:
                out[name] = body[name]
        elif "default" in sub:
            out[name] = sub["default"]
    if errors:
        raise ValidationError(errors)
    return out


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
}


def ecma_pattern(pattern: str) -> str:
    """JSON Schema patterns are ECMA regexes, whose final `$` is the end of input; Python's
    `$` also matches before a trailing newline, so `"vga\\n"` would pass. Use `\\Z`."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


def is_unicode(text: str) -> bool:
    """Whether `text` has no lone surrogates: JSON's \\uXXXX escapes let them through, but
    no UTF-8 consumer (the tokenizer, a file, a webhook body) can take one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_value(schema: Mapping[str, Any], value: Any) -> str | None:
    """The first problem with one value, or None."""
    kind = schema.get("type")
    if kind is not None:
        # bool is an int in Python but not in JSON.
        if not isinstance(value, _TYPES[kind]) or (kind != "boolean" and isinstance(value, bool)):
            return f"must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        if kind == "number" and value != value:  # NaN
            return "must be a finite number"
    if "enum" in schema and value not in schema["enum"]:
        return f"must be one of {', '.join(map(str, schema['enum']))}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"must be >= {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"must be <= {schema['maximum']}"
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return f"must be > {schema['exclusiveMinimum']}"
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            return f"must be < {schema['exclusiveMaximum']}"
    if isinstance(value, str):
        if not is_unicode(value):
            return "must be valid Unicode text (a lone surrogate such as \\ud800 is not)"
        if "minLength" in schema and len(value) < schema["minLength"]:
            return (
                "must not be empty"
                if schema["minLength"] == 1
                else (f"must be at least {schema['minLength']} characters")
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"must be at most {schema['maxLength']} characters"
        if "pattern" in schema and not re.search(ecma_pattern(schema["pattern"]), value):
            return "must not be blank" if schema["pattern"] == r"\S" else "has an invalid format"
        if schema.get("format") == "uri":
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                return "must be an http:// or https:// URL"
    if "anyOf" in schema:
        if all(check_value(option, value) for option in schema["anyOf"]):
            return f"must be {schema.get('description', 'one of the allowed forms')}"
    return None
