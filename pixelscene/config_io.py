"""Reading configs: a preset's YAML or a model folder's config.json into plain data, a typed
tree of dataclasses built from that data with every value checked, and errors that name
the key and, where it is found in the file, the line.

`pixelscene.config` holds the dataclasses; this module knows nothing of them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from pixelscene.errors import PixelsceneError

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(PixelsceneError, ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


def check_type(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {type(value).__name__} {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {type(value).__name__} {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        return [check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: unsupported union type")
    return value


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """An instance of dataclass `cls` from a mapping, nested dataclasses included; unknown
    keys and wrong types raise ConfigError naming the key (`prefix` leads its path)."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = check_type(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def find_config(path: str | Path) -> Path:
    """The file a config argument names: a preset name like 'tiny' is configs/tiny.yaml, a
    model folder its config.json."""
    path = Path(path)
    if not path.exists() and not path.suffix and (CONFIGS_DIR / f"{path}.yaml").exists():
        path = CONFIGS_DIR / f"{path}.yaml"
    if path.is_dir():
        path = path / "config.json"
    return path


def read_config(path: Path) -> tuple[str, Any]:
    """(the file's text, its parsed YAML or JSON); errors name the file and line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}, line {e.lineno}: not valid JSON: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    return text, data


def located(error: ConfigError, path: Path, text: str) -> ConfigError:
    """The error with the file and, where its key is found in the text, the line."""
    line = _line_of(text, str(error))
    where = f"{path}, line {line}" if line else str(path)
    return ConfigError(f"{where}: {error}")


_KEY_PATH = re.compile(r"^(?:unknown key )?([a-z_]+(?:\.[a-z_]+)*)(?:\[(\d+)\])?")


def _line_of(text: str, message: str) -> int | None:
    """The 1-based line of the key an error message starts with ("train_vqgan.steps must
    ..."), found in the file's YAML (or JSON) node tree; None where it is not there."""
    m = _KEY_PATH.match(message)
    if not m:
        return None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in m.group(1).split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        match = next((kv for kv in node.value if kv[0].value == part), None)
        if match is None:
            break
        line = match[0].start_mark.line + 1
        node = match[1]
    else:
        if m.group(2) is not None and isinstance(node, yaml.SequenceNode):
            i = int(m.group(2))
            if i < len(node.value):
                line = node.value[i].start_mark.line + 1
    return line
