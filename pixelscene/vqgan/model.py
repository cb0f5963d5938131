"""The VQGAN: encoder, quantizer, decoder, plus exact 320x200 <-> 13x20 padding and cropping."""

from __future__ import annotations

import os

import mlx.core as mx
import mlx.nn as nn

from pixelscene.config import VQGANConfig

from .decoder import Decoder
from .encoder import Encoder
from .quantizer import VectorQuantizer


class PaddedFrame:
    """Exact 320x200 <-> padded-image bookkeeping for an image tokenizer whose `cfg` has
    `image_size` and `pad_rows`: edge rows are replicated above and below so the grid tiles
    the padded image, and decoding crops back."""

    def pad(self, images: mx.array) -> mx.array:
        """(B, 200, 320, C) -> (B, 208, 320, C), edge rows replicated."""
        top, bottom = self.cfg.pad_rows
        self._check_size(images)
        return mx.pad(images, [(0, 0), (top, bottom), (0, 0), (0, 0)], mode="edge")

    def crop(self, padded: mx.array) -> mx.array:
        """(B, 208, 320, C) -> (B, 200, 320, C)."""
        top = self.cfg.pad_rows[0]
        return padded[:, top : top + self.cfg.image_size[0]]

    def _check_size(self, images: mx.array) -> None:
        if images.ndim != 4 or list(images.shape[1:3]) != list(self.cfg.image_size):
            h, w = self.cfg.image_size
            raise ValueError(f"expected images (B, {h}, {w}, C), got {tuple(images.shape)}")


class VQGAN(PaddedFrame, nn.Module):
    """Images (B, 200, 320, 3) in [-1, 1] <-> codes (B, 13, 20).

    Images are padded to 208 rows by replicating the edge rows (4 above, 4 below), so the
    16x downsampling tiles them into a 13x20 grid; decoding crops back to 200 rows.
    `__call__` works on any size divisible by 16 (training crops) without padding.
    """

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.codebook_dim)
        self.decoder = Decoder(cfg)

    @property
    def codebook_size(self) -> int:
        """Number of codes: every code is in range(codebook_size)."""
        return self.cfg.codebook_size

    def __call__(self, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Reconstruct x (B, H, W, 3), H and W divisible by 16.

        Returns (x_recon (B, H, W, 3) unclipped, indices (B, H/16, W/16), vq_loss).
        """
        z_q, indices, vq_loss = self.quantizer(self.encoder(x))
        return self.decoder(z_q), indices, vq_loss

    def encode(self, images: mx.array) -> mx.array:
        """(B, 200, 320, 3) float32 in [-1, 1] -> (B, 13, 20) int32 codes."""
        return self.quantizer.lookup(self.encoder(self.pad(images)))

    def decode(self, codes: mx.array) -> mx.array:
        """(B, 13, 20) int codes -> (B, 200, 320, 3) float32 in [-1, 1]."""
        x = self.decoder(self.quantizer.decode(codes.astype(mx.int32)))
        return mx.clip(self.crop(x), -1.0, 1.0)

    def reconstruct(self, images: mx.array) -> mx.array:
        """Encode and decode whole images: (B, 200, 320, 3) -> (B, 200, 320, 3)."""
        return self.decode(self.encode(images))


def load_vqgan(model_dir: str | os.PathLike | None = None) -> VQGAN:
    """Build the VQGAN from MODEL_DIR/config.json and load vqgan.safetensors strictly.

    None loads the bundled model. A config that does not match the weights raises
    ModelLoadError naming the first mismatching parameter.
    """
    from pixelscene import model_io

    path = model_io.resolve_model_dir(model_dir)
    cfg = model_io.load_model_config(path)
    model = VQGAN(cfg.vqgan)
    model_io.load_weights(path / "vqgan.safetensors", model)
    model.eval()
    return model
