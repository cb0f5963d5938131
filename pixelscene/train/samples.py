"""Sample grids a training writes at its evaluations, for the eye (and for the job page).

The VQGAN, decoder and categorical tokenizer trainers draw reconstructions
(`common.save_reconstructions`); the transformer draws `transformer_grid`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from pixelscene.config import Config
from pixelscene.data.captioned_codes import CaptionedCodes
from pixelscene.data.datasets import to_uint8
from pixelscene.errors import PixelsceneError
from pixelscene.train import common

log = logging.getLogger(__name__)


def image_tokenizer(model_dir: Path) -> Any:
    """The image tokenizer of a model folder, or None (with a warning) if it cannot be loaded:
    the grids are a diagnostic, so a training goes on without them."""
    from pixelscene.image_tokenizers import load_tokenizer

    try:
        return load_tokenizer(model_dir)
    except PixelsceneError as e:
        log.warning("no sample grids: %s", e)
        return None


def transformer_grid(
    path: Path, model: Any, cfg: Config, data: CaptionedCodes, tokenizer: Any, count: int = 4
) -> None:
    """Up to `count` held-out images as the image tokenizer draws their codes (top row) over
    what the transformer draws from their first captions (bottom row), with the config's
    sampling settings and seeds 0, 1, ..."""
    from pixelscene.sampling import sample_codes

    idx = np.arange(min(count, len(data)))
    ids, mask = mx.array(data.ids[data.start[idx]]), mx.array(data.mask[data.start[idx]])
    was_training = model.training
    model.eval()
    try:
        if "text_encoder" in model:  # else `ids` are a frozen encoder's states already
            ids, mask = model.encode_text(ids, mask)
        s = cfg.sampling
        codes = sample_codes(
            model, ids, mask, seeds=list(range(len(idx))), temperature=s.temperature,
            top_k=s.top_k, top_p=s.top_p, cfg_scale=s.cfg_scale, noise=s.noise,
            compiled=False, engine="mlx",
        )  # fmt: skip
    finally:
        model.train(was_training)
    shape = cfg.token_layout().shape
    rows = [
        tokenizer.decode(mx.array(c.reshape(len(idx), *shape))) for c in (data.codes[idx], codes)
    ]
    common.save_rows(path, [to_uint8(np.array(row)) for row in rows])
