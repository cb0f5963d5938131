"""Helpers for tests: a small random-weight model folder that loads and generates fast."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx

from pixelscene.config import Config, TransformerConfig, load_config

MICRO_CONFIG = {
    "name": "micro",
    "vqgan": {
        "hidden_channels": 8,
        "channel_multipliers": [1, 1, 1, 1],
        "num_res_blocks": 1,
        "codebook_size": 64,
        "codebook_dim": 8,
        "disc_channels": 8,
        "disc_layers": 1,
        "patch_size": 8,
    },
    "transformer": {
        "embed_dim": 32,
        "num_heads": 2,
        "num_layers": 2,
        "mlp_ratio": 2,
        "dropout": 0.0,
        "text_encoder": "learned",
        "text_embed_dim": 32,
        "text_num_heads": 2,
        "text_num_layers": 1,
        "max_text_len": 16,
        "text_vocab_size": 96,
    },
    "sampling": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "cfg_scale": 3.0},
}

MICRO_TEXT_LEN = 8


def micro_transformer_config(**overrides) -> TransformerConfig:
    """A 32-dim, 2-layer transformer reading 8-token captions, for unit tests."""
    base = dict(
        embed_dim=32,
        num_heads=4,
        num_layers=2,
        text_embed_dim=32,
        text_num_heads=2,
        text_num_layers=2,
        max_text_len=MICRO_TEXT_LEN,
        text_vocab_size=64,
        dropout=0.0,
    )
    return TransformerConfig(**{**base, **overrides})


CAPTIONS = [
    "a castle at sunset",
    "a lonely lighthouse on a rocky coast at night, light rain",
    "foggy hills with pine trees at dawn",
    "a cottage by a calm lake under a clear sky",
    "desert dunes with cacti at midday",
    "ruins in the mountains during a snowfall",
    "a tower on the plains among oaks, cloudy",
]


def micro_config() -> Config:
    """A 4-level 8-channel VQGAN (8x8 patches, codebook 64) and a 2-layer 32-dim transformer."""
    return Config.from_dict(MICRO_CONFIG)


def make_random_model_dir(
    path: str | os.PathLike, config_name_or_config: str | Config | None = None, seed: int = 0
) -> Path:
    """Write a complete model folder with random weights; returns its path.

    Args:
        path: the folder to write (created).
        config_name_or_config: None for the micro config, a preset name/path, or a Config.
        seed: weights are drawn from MLX's global generator seeded with this, so the same
            call writes the same files (and the same model version).
    """
    from pixelscene import model_io
    from pixelscene.pipeline import build_transformer
    from pixelscene.vqgan import VQGAN

    if config_name_or_config is None:
        cfg = micro_config()
    elif isinstance(config_name_or_config, Config):
        cfg = config_name_or_config
    else:
        cfg = load_config(config_name_or_config)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mx.random.seed(seed)
    vqgan = VQGAN(cfg.vqgan)
    transformer = build_transformer(cfg)
    mx.eval(vqgan.parameters(), transformer.parameters())
    model_io.save_model_config(path, cfg)
    model_io.save_weights(path / "vqgan.safetensors", vqgan)
    model_io.save_weights(path / "transformer.safetensors", transformer)
    if cfg.transformer.text_encoder == "learned":
        from pixelscene.transformer.tokenizer import Tokenizer

        tok = Tokenizer.build(
            CAPTIONS, cfg.transformer.text_vocab_size, cfg.transformer.max_text_len
        )
        tok.save(path / "tokenizer.json")
    return path
