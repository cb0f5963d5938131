"""The categorical image tokenizer: 8x8 patches <-> FSQ codes, pixels painted as choices."""

from .fsq import FSQ
from .model import ImageTokenizer, color_levels, load_image_tokenizer

__all__ = ["FSQ", "ImageTokenizer", "color_levels", "load_image_tokenizer"]
