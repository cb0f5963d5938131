"""Text-conditioned transformer that writes VQGAN code grids."""

from pixelscene.transformer.cache import KVCache, StaticKVCache
from pixelscene.transformer.model import Context, ImageTransformer, build_transformer
from pixelscene.transformer.text_encoder import TextEncoder
from pixelscene.transformer.tokenizer import Tokenizer

__all__ = [
    "Context",
    "ImageTransformer",
    "KVCache",
    "StaticKVCache",
    "TextEncoder",
    "Tokenizer",
    "build_transformer",
]
