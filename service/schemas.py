"""Request schemas: plain dicts in a JSON Schema subset, used to validate and to document.

One schema per request body. `validate(schema, body)` checks it and returns the body with
defaults filled in, or raises `ValidationError` naming every bad field; `openapi.py` puts the
very same dicts into `/openapi.json` (OpenAPI 3.1, whose schemas are JSON Schema 2020-12),
so the document cannot drift from what is enforced.

Supported keywords: type (object, string, integer, number, boolean, null; one or a list),
properties, required, additionalProperties (false only), default, enum, minimum, maximum,
exclusiveMinimum, exclusiveMaximum (numbers, as in JSON Schema 2020-12), minLength,
maxLength, pattern, format (uri: an http(s) URL, `is_http_url`), anyOf, description.

An optional field may be null, which means the same as leaving it out (`nullable_optionals`
says so in each schema). Rules between fields (a training's stage needs a `vqgan`) are
documented in the schema's `allOf` and enforced by `rule_errors`, beside them here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pixelscene.prompts import CONTROL_CHARS, PROMPT_MAX
from workers.jobstore.models import NAME_PATTERN, REF_PATTERN
from workers.jobstore.settings import JobSettings

SEED_LIMIT = 2**31
# auto:N with N in 2..256, as a pattern so that it documents itself.
PALETTE_PATTERN = r"^(none|vga|auto:([2-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-6]))$"
# A character that is not white space, in Python's and in ECMA's sense alike: their `\s`
# differ (Python's has \x1c-\x1f and \x85, ECMA's \ufeff), so name the difference.
NOT_BLANK = r"[^\s\x1c-\x1f\x85\ufeff]"
# A prompt: not blank, and without control characters (pixelscene.prompts.CONTROL_CHARS).
PROMPT_PATTERN = rf"^[^{CONTROL_CHARS}]*[^\s\ufeff{CONTROL_CHARS}][^{CONTROL_CHARS}]*$"


def _ipv6_pattern() -> str:
    """RFC 3986's IPv6address as a regex (what Python's `ipaddress` takes, zones aside)."""
    h16 = "[0-9A-Fa-f]{1,4}"
    octet = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    ls32 = rf"({h16}:{h16}|{octet}(\.{octet}){{3}})"
    forms = [rf"({h16}:){{6}}{ls32}", rf"::({h16}:){{5}}{ls32}"]
    for n in range(7):  # [ *n( h16 ":" ) h16 ] "::" then what is left of the 128 bits
        if n < 5:
            rest = rf"({h16}:){{{4 - n}}}{ls32}"
        else:
            rest = h16 if n == 5 else ""
        forms.append(rf"(({h16}:){{0,{n}}}{h16})?::{rest}")
    return "(" + "|".join(forms) + ")"


# An http(s) URL (scheme in any case): user info, a host (a DNS name, an IPv4 address in
# any of its spellings, or an IPv6 address in brackets), a port up to 65535, then printable
# ASCII.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
WEBHOOK_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9._~%!$&'()*+,;=:-]+@)?"
    rf"({_LABEL}(\.{_LABEL})*\.?|\[{_ipv6_pattern()}\])(:{_PORT})?([/?#][!-~]*)?$"
)


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
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {
            "prompt": {
                "type": "string",
                "minLength": 1,
                "maxLength": PROMPT_MAX,
                "pattern": PROMPT_PATTERN,
            },
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
                "pattern": REF_PATTERN,
                "default": settings.default_model,
                "description": "a model of GET /v1/models: a name (a trained model's newest "
                "version) or name@version; an unknown one is refused (422)",
            },
            "webhook": webhook_schema(),
        },
    }
    return nullable_optionals(schema)


def training_schema(settings: JobSettings) -> dict[str, Any]:
    """`POST /v1/trainings`: train on a dataset; a `name` makes the result a model version."""
    presets = preset_names(settings)
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["stage", "dataset"],
        "properties": {
            "stage": {
                "type": "string",
                "enum": ["tokenizer", "transformer", "all", "vqgan", "decoder"],
                "description": "tokenizer: the preset's image tokenizer (the VQGAN, or the "
                "categorical one of `pixel`), or with `base_model` a fine-tune of its VQGAN's "
                "decoder (its codes, and so its transformer, stay valid); transformer: a "
                "transformer on `base_model`'s tokenizer (its own transformer fine-tuned "
                "unless a `preset` is given); all: both, and the encoding between, as one "
                "job. The older names: vqgan = tokenizer; decoder = tokenizer of `vqgan`",
            },
            "dataset": {
                "type": "string",
                "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                "description": "an uploaded dataset's id (POST /v1/datasets), or a folder "
                "under the workers' datasets directory",
            },
            "preset": {
                "type": "string",
                "enum": presets,
                "description": "the architecture and training settings: a preset in configs/ "
                "or one of the server's (PIXELSCENE_PRESETS). Default: tiny, or with "
                "`base_model` the base's own (a fine-tune)",
            },
            "config": {
                "type": "string",
                "enum": presets,
                "description": "the older name of `preset`",
            },
            "steps": {
                "type": "integer",
                "minimum": 1,
                "maximum": 1_000_000,
                "description": "steps of each stage (default: the preset's)",
            },
            "max_minutes": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 10080,
                "description": "stop (evaluated and exported) once training has run this long; "
                "stage all gives each of its two stages half",
            },
            "base_model": {
                "type": "string",
                "pattern": REF_PATTERN,
                "description": "start from this model (a name or name@version of GET "
                "/v1/models): its tokenizer and transformer are fine-tuned, not trained anew",
            },
            "name": {
                "type": "string",
                "pattern": f"^{NAME_PATTERN}$",
                "description": "the model whose next version the result becomes (GET "
                "/v1/models); not a bundled model's name. Without it (the older stages only) "
                "the result stays in the job's folder",
            },
            "vqgan": {
                "type": "string",
                "enum": sorted(settings.models),
                "description": "the older form of `base_model` for stages transformer and "
                "decoder: the model whose VQGAN the transformer trains on, or whose decoder "
                "is fine-tuned",
            },
            "init_from": {
                "type": "string",
                "enum": sorted(settings.models),
                "description": "stage transformer with `vqgan`: start from this model's "
                "transformer weights (a fine-tune: new optimizer and schedule; the config's "
                "architecture must match)",
            },
            "webhook": webhook_schema(),
        },
        "allOf": training_rules(),
    }
    return nullable_optionals(schema)


def _given(*names: str) -> dict[str, Any]:
    """JSON Schema for "each of these fields is there and not null"."""
    return {"required": list(names), "properties": {n: {"type": "string"} for n in names}}


def training_rules() -> list[dict[str, Any]]:
    """The rules `rule_errors` enforces, as JSON Schema. A field that is null counts as
    absent, hence `type: string` beside each `required`."""
    absent = {"type": "null"}
    rules: list[dict[str, Any]] = [
        {
            "description": "stages transformer and decoder need `base_model` (or `vqgan`)",
            "if": {
                "required": ["stage"],
                "properties": {"stage": {"enum": ["transformer", "decoder"]}},
            },
            "then": {"anyOf": [_given("vqgan"), _given("base_model")]},
        },
        {
            "description": "`init_from` is only for stage transformer",
            "if": _given("init_from"),
            "then": {"properties": {"stage": {"const": "transformer"}}},
        },
        {
            "description": "stages tokenizer and all, and a `base_model`, need a `name`",
            "if": {
                "anyOf": [
                    {
                        "required": ["stage"],
                        "properties": {"stage": {"enum": ["tokenizer", "all"]}},
                    },
                    _given("base_model"),
                ]
            },
            "then": _given("name"),
        },
        {
            "description": "`base_model` replaces `vqgan` and `init_from`: not with them",
            "if": _given("base_model"),
            "then": {"properties": {"vqgan": absent, "init_from": absent}},
        },
        {
            "description": "`config` is the older name of `preset`: not both",
            "if": _given("preset"),
            "then": {"properties": {"config": absent}},
        },
    ]
    return rules


def training_rule_errors(params: Mapping[str, Any]) -> dict[str, str]:
    """The rules of `training_rules` that `params` breaks: one message per field to change."""
    errors = {}
    stage = params.get("stage")
    base = params.get("base_model")
    if stage in ("transformer", "decoder") and not params.get("vqgan") and not base:
        errors["base_model"] = f"is required for stage {stage} (or its older form, vqgan)"
    if params.get("init_from") and stage != "transformer":
        errors["init_from"] = "is only for stage transformer"
    if (stage in ("tokenizer", "all") or base) and not params.get("name"):
        errors["name"] = (
            f"is required for stage {stage}" if stage in ("tokenizer", "all")
            else "is required with base_model"
        )  # fmt: skip
    if base:
        for old in ("vqgan", "init_from"):
            if params.get(old):
                errors[old] = "is the older form of base_model: give one of them"
    if params.get("preset") and params.get("config"):
        errors["config"] = "is the older name of preset: give one of them"
    return errors


def preset_names(settings: JobSettings) -> list[str]:
    """The presets a training may name: configs/*.yaml and the server's own."""
    from pixelscene.config_io import CONFIGS_DIR

    return sorted({p.stem for p in CONFIGS_DIR.glob("*.yaml")} | set(settings.presets))


def rule_errors(schema: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, str]:
    """The cross-field rules of a request (its schema's `allOf`) that `params`, a body
    `validate` accepted, breaks: one message per field to change."""
    if "allOf" not in schema:  # only the training schema has rules
        return {}
    return training_rule_errors(params)


def webhook_schema() -> dict[str, Any]:
    """An http(s) URL with a host: its pattern, then `is_http_url` (format uri)."""
    return {
        "type": "string",
        "format": "uri",
        "maxLength": 2000,
        "pattern": WEBHOOK_PATTERN,
        "description": "http(s) URL that gets the job JSON (signed) when the job ends. The "
        "server must have a webhook secret, and refuses addresses it may not send to "
        "(link-local, metadata, private networks it does not list): 400",
    }


def nullable_optionals(schema: dict[str, Any]) -> dict[str, Any]:
    """Let every optional property of an object schema be null (= left out): "null" joins
    its type, None its enum."""
    required = set(schema.get("required", ()))
    for name, sub in schema["properties"].items():
        if name in required:
            continue
        sub["type"] = [sub["type"], "null"]
        if "enum" in sub:
            sub["enum"] = [*sub["enum"], None]
    return schema


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
        value = body.get(name)
        if value is None:  # left out, or null where the schema allows it (the same)
            if name in body and not allows_null(sub):
                errors[name] = "must not be null"
            elif "default" in sub:
                out[name] = sub["default"]
            continue
        message = check_value(sub, value)
        if message:
            errors[name] = message
        elif isinstance(value, float) and "integer" in _types(sub):
            out[name] = int(value)  # 2.0 is an integer in JSON Schema
        else:
            out[name] = value
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

PATTERN_MESSAGES = {
    NOT_BLANK: "must not be blank",
    PROMPT_PATTERN: "must not be blank nor hold control or bidirectional override characters",
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


def is_http_url(text: str) -> bool:
    """Whether `text` parses as an http(s) URL with a host name and a valid port (the
    pattern then says which of those a webhook may be)."""
    try:
        parsed = urlsplit(text)
        parsed.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    return [] if kind is None else list(kind) if isinstance(kind, list) else [kind]


def allows_null(schema: Mapping[str, Any]) -> bool:
    return "null" in _types(schema)


def _is_type(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if isinstance(value, bool):  # bool is an int in Python but not in JSON
        return kind == "boolean"
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[kind])


def check_value(schema: Mapping[str, Any], value: Any) -> str | None:
    """The first problem with one value, or None."""
    kinds = _types(schema)
    if kinds and not any(_is_type(value, kind) for kind in kinds):
        kind = next((k for k in kinds if k != "null"), "null")
        return f"must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN
        return "must be a finite number"
    if "enum" in schema and value not in schema["enum"]:
        named = ", ".join(str(v) for v in schema["enum"] if v is not None)
        return f"must be one of {named}"
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
        if schema.get("format") == "uri" and not is_http_url(value):
            return "must be an http:// or https:// URL"
        if "pattern" in schema and not re.search(ecma_pattern(schema["pattern"]), value):
            return PATTERN_MESSAGES.get(schema["pattern"], "has an invalid format")
    if "anyOf" in schema:
        if all(check_value(option, value) for option in schema["anyOf"]):
            return f"must be {schema.get('description', 'one of the allowed forms')}"
    return None
