"""Helpers for tests: the micro configs of every model part and trainer (one place, so a
new config field has one default to update), and a small random-weight model folder that
loads and generates fast."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import mlx.core as mx

from pixelscene.config import (
    Config,
    TokenizerConfig,
    TokenizerTrainConfig,
    TransformerConfig,
    VQGANConfig,
    VQGANTrainConfig,
    load_config,
)

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


def micro_vqgan_config(**overrides) -> VQGANConfig:
    """A 4-level 8-channel VQGAN on 4x4 patches (codebook 64 x 8), for unit tests."""
    base = dict(
        hidden_channels=8,
        channel_multipliers=[1, 1, 2, 2],
        num_res_blocks=1,
        codebook_size=64,
        codebook_dim=8,
        patch_size=4,
    )
    return VQGANConfig(**{**base, **overrides})


def micro_vqgan_run(**train) -> Config:
    """The micro VQGAN (codebook 32, a 2-layer discriminator) and a 6-step training run on
    2 crops of 32x32 that starts its GAN at step 4 and evaluates 2 images."""
    vq = micro_vqgan_config(codebook_size=32, disc_channels=8, disc_layers=2)
    defaults = dict(
        batch_size=2,
        crop_size=32,
        steps=6,
        warmup_steps=2,
        learning_rate=3e-3,
        disc_start=4,
        eval_images=2,
        log_every=1,
        sample_every=100,
        eval_every=100,
        checkpoint_every=100,
    )
    train_cfg = VQGANTrainConfig(**{**defaults, **train})
    return Config(name="micro", vqgan=vq, train_vqgan=train_cfg).validate()


def micro_tokenizer_config(**overrides) -> TokenizerConfig:
    """A 16-dim categorical tokenizer with one block each side and a 60-code FSQ grid."""
    base = dict(dim=16, encoder_blocks=1, decoder_blocks=1, pixel_features=8, fsq_levels=[5, 4, 3])
    return TokenizerConfig(**{**base, **overrides})


def micro_tokenizer_run(**train) -> Config:
    """The micro tokenizer and a 6-step training run on 2 crops of 32x32."""
    defaults = dict(batch_size=2, crop_size=32, steps=6, warmup_steps=2, learning_rate=3e-3)
    defaults.update(eval_images=2, log_every=1, eval_every=100, checkpoint_every=100)
    return Config(
        name="micro",
        image_tokenizer="categorical",
        tokenizer=micro_tokenizer_config(),
        train_tokenizer=TokenizerTrainConfig(**{**defaults, **train}),
    ).validate()


_MICRO_TRANSFORMER_RUN: dict[str, Any] = {
    "name": "micro",
    "transformer": {
        "embed_dim": 32,
        "num_heads": 2,
        "num_layers": 2,
        "text_embed_dim": 32,
        "text_num_heads": 2,
        "text_num_layers": 1,
        "max_text_len": 12,
        "text_vocab_size": 64,
        "dropout": 0.1,
    },
    "train_transformer": {
        "batch_size": 4,
        "steps": 8,
        "warmup_steps": 2,
        "eval_every": 4,
        "checkpoint_every": 3,
        "log_every": 2,
    },
}


def micro_transformer_run(**train) -> dict[str, Any]:
    """A preset (as a fresh dict, for a YAML file) of a micro transformer and an 8-step run
    of batch 4 on a VQGAN's code grids; `train` overrides its train_transformer section."""
    preset = copy.deepcopy(_MICRO_TRANSFORMER_RUN)
    preset["train_transformer"].update(train)
    return preset


def micro_decoder_settings(**overrides):
    """A 6-step decoder fine-tune of batch 2 that checkpoints every 2 steps."""
    from pixelscene.train.decoder import DecoderTuneSettings

    base = dict(
        steps=6,
        batch_size=2,
        learning_rate=3e-3,
        warmup_steps=1,
        eval_images=2,
        eval_every=100,
        checkpoint_every=2,
        log_every=1,
    )
    return DecoderTuneSettings(**{**base, **overrides})


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


def micro_categorical_config() -> Config:
    """The micro transformer on a micro categorical tokenizer: 16x16 patches (a 13x20 grid
    of 60 codes) and an 8-colour palette, so 24 + 260 tokens an image of 60 + 65 values,
    sampled with uniform noise (as the large vocabularies of real categorical models are)."""
    cfg = micro_config()
    cfg.image_tokenizer = "categorical"
    cfg.tokenizer = micro_tokenizer_config(patch_size=16, palette_size=8)
    cfg.sampling.noise = "uniform"
    return cfg.validate()


def micro_categorical_setup(root: str | os.PathLike) -> tuple[Path, Path]:
    """ROOT/data (6 synthetic scenes, 2 captions each) and ROOT/tokenizer (a random micro
    categorical tokenizer folder, `micro_categorical_config()`): what a transformer trains
    on in tests. Returns (data, tokenizer folder)."""
    import mlx.core as mx

    from pixelscene import model_io
    from pixelscene.data.synth import write_dataset
    from pixelscene.imagetok import ImageTokenizer

    root = Path(root)
    data, tok_dir = root / "data", root / "tokenizer"
    write_dataset(data, 6, seed=5, captions=2)
    cfg = micro_categorical_config()
    mx.random.seed(1)
    tokenizer = ImageTokenizer(cfg.tokenizer)
    mx.eval(tokenizer.parameters())
    model_io.save_model_config(tok_dir, cfg)
    model_io.save_weights(tok_dir / "tokenizer.safetensors", tokenizer)
    return data, tok_dir


def make_random_model_dir(
    path: str | os.PathLike,
    config_name_or_config: str | Config | None = None,
    seed: int = 0,
    dtype: mx.Dtype | None = None,
) -> Path:
    """Write a complete model folder with random weights; returns its path.

    Args:
        path: the folder to write (created).
        config_name_or_config: None for the micro config, a preset name/path, or a Config.
        seed: weights are drawn from MLX's global generator seeded with this, so the same
            call writes the same files (and the same model version).
        dtype: the weights' stored dtype (mx.float16, as shipped folders hold them; None:
            float32).
    """
    from pixelscene import model_io
    from pixelscene.image_tokenizers import weights_file
    from pixelscene.imagetok import ImageTokenizer
    from pixelscene.transformer.model import build_transformer
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
    if cfg.image_tokenizer == "vqgan":
        vqgan = VQGAN(cfg.vqgan)
    else:
        vqgan = ImageTokenizer(cfg.tokenizer)
    transformer = build_transformer(cfg)
    mx.eval(vqgan.parameters(), transformer.parameters())
    model_io.save_model_config(path, cfg)
    model_io.save_weights(path / weights_file(cfg.image_tokenizer), vqgan, dtype)
    model_io.save_weights(path / "transformer.safetensors", transformer, dtype)
    if cfg.transformer.text_encoder == "learned":
        from pixelscene.transformer.tokenizer import Tokenizer

        tok = Tokenizer.build(
            CAPTIONS, cfg.transformer.text_vocab_size, cfg.transformer.max_text_len
        )
        tok.save(path / "tokenizer.json")
    return path
