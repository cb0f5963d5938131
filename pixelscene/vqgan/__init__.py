"""VQGAN: 320x200 images <-> 13x20 grids of codes from a 512-entry codebook."""

from .decoder import Decoder
from .discriminator import PatchDiscriminator
from .encoder import Encoder
from .layers import Downsample, ResidualBlock, Upsample, depth_to_space, space_to_depth
from .model import VQGAN, load_vqgan
from .quantizer import VectorQuantizer, usage_stats

__all__ = [
    "VQGAN",
    "Decoder",
    "Downsample",
    "Encoder",
    "PatchDiscriminator",
    "ResidualBlock",
    "Upsample",
    "VectorQuantizer",
    "depth_to_space",
    "load_vqgan",
    "space_to_depth",
    "usage_stats",
]
