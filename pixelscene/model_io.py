"""A model on disk is a folder: config.json plus one *.safetensors per part.

MODEL_DIR/config.json             the full Config (pixelscene.config)
MODEL_DIR/vqgan.safetensors       VQGAN weights
MODEL_DIR/transformer.safetensors transformer weights (with its text encoder if learned)
MODEL_DIR/tokenizer.json          the caption vocabulary
MODEL_DIR/MODEL_CARD.md           how it was made and what it measures
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from pixelscene.config import Config, ConfigError, load_config
from pixelscene.errors import ModelLoadError

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_MODEL_DIR = PACKAGE_DIR / "models" / "tiny"
# Read once at import: os.umask can only be read by setting it, which races with threads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def resolve_model_dir(model_dir: str | os.PathLike | None) -> Path:
    """The given folder, or the bundled model when None; must hold a config.json."""
    path = BUNDLED_MODEL_DIR if model_dir is None else Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a model folder (no config.json)")
    return path


def model_dir_or_bundled(name_or_dir: str | os.PathLike | None) -> Path | None:
    """A command's --model: the folder as given, or where there is none, the model bundled
    under that name (`tiny`: pixelscene/models/tiny); None (the default model) stays None."""
    if name_or_dir is None:
        return None
    path = Path(name_or_dir)
    bundled = PACKAGE_DIR / "models" / path.name
    if not path.exists() and path.name == str(name_or_dir) and (bundled / "config.json").is_file():
        return bundled
    return path


def load_model_config(model_dir: str | os.PathLike) -> Config:
    try:
        return load_config(Path(model_dir) / "config.json")
    except ConfigError as e:
        raise ModelLoadError(str(e)) from None


def save_model_config(model_dir: str | os.PathLike, config: Config) -> None:
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(model_dir / "config.json", json.dumps(config.to_dict(), indent=2).encode())


def round_to_float16(module: nn.Module) -> None:
    """Round a module's float parameters to float16 values in place (kept in their dtype): the
    weights it would have after a save in float16 and a load."""
    from mlx.utils import tree_map

    module.update(
        tree_map(
            lambda p: (
                p.astype(mx.float16).astype(p.dtype) if mx.issubdtype(p.dtype, mx.floating) else p
            ),
            module.parameters(),
        )
    )


def save_weights(path: str | os.PathLike, module: nn.Module, dtype: mx.Dtype | None = None) -> None:
    """Write a module's parameters to safetensors atomically, optionally cast (float16 to ship)."""
    params = dict(tree_flatten(module.parameters()))
    if dtype is not None:
        params = {
            k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v
            for k, v in params.items()
        }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.safetensors")
    mx.save_safetensors(str(tmp), params)
    os.replace(tmp, path)


def load_weights(path: str | os.PathLike, module: nn.Module) -> None:
    """Load safetensors into a module, strictly: every key present, every shape equal.

    Weights stored in float16 are cast to the module's own dtype (float32).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"missing weights file {path}")
    try:
        weights = mx.load(str(path))
    except Exception as e:  # mlx raises bare RuntimeError/ValueError on corrupt files
        raise ModelLoadError(f"cannot read {path}: {e}") from None
    expected = dict(tree_flatten(module.parameters()))
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ModelLoadError(
            f"{path} does not match the model built from config.json: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    for key, value in expected.items():
        if weights[key].shape != value.shape:
            raise ModelLoadError(
                f"{path}: {key} has shape {tuple(weights[key].shape)} but config.json "
                f"builds {tuple(value.shape)}; the config does not match these weights"
            )
    module.load_weights([(k, v.astype(expected[k].dtype)) for k, v in weights.items()], strict=True)
    mx.eval(module.parameters())


def model_version(model_dir: str | os.PathLike) -> str:
    """`<name>-<12 hex>`: a content hash of config and weights, stable across copies."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")) + [model_dir / "config.json"]:
        if f.is_file():
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    name = load_model_config(model_dir).name
    return f"{name}-{digest.hexdigest()[:12]}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so readers see either the old content or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
