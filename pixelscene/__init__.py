"""pixelscene: text to VGA-era 320x200 pixel-art backgrounds."""

import os

# float32 stays float32 on every backend. Unless told otherwise, MLX runs float32 matrix
# products at TF32 precision on CUDA (and on Apple's M5 accelerators): on an H200 the cached
# and uncached logits then differ by 1.5e-3, and near-tied codes can differ between machines.
# Sampling there is bound by the host, not the arithmetic, so full precision costs nothing.
# Set MLX_ENABLE_TF32=1 before starting to trade precision for speed (training on CUDA).
os.environ.setdefault("MLX_ENABLE_TF32", "0")
